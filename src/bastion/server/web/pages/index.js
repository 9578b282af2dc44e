// The page modules of the web UI (owned by the pages' author): import each one here; each
// calls registerPage() from ../app.js when it loads. The chat page is loaded by app.js itself.
export {};
