// The page modules of the web UI: each calls registerPage() from ../app.js when it loads.
// The chat page is loaded by app.js itself.
import './sessions.js';
import './knowledge.js';
import './approvals.js';
import './audit.js';
import './models.js';
import './tasks.js';
import './voice.js';

const css = document.createElement('link');
css.rel = 'stylesheet';
const here = new URL(import.meta.url); // its ?v= (the UI's version) goes on the CSS too
css.href = new URL('./pages.css', here).pathname + here.search;
document.head.append(css);

export {};
