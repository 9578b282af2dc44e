// The web UI's one Markdown renderer: marked (parse) + DOMPurify (sanitise), both vendored.
//
// Model text is untrusted. Raw HTML in it is shown as text (never parsed), images become plain
// links (no request leaves the page by itself), only http(s)/mailto links survive, and the
// result is sanitised again with an allow-list before it becomes DOM nodes (a fragment, never
// an innerHTML assignment). Everything else in the UI inserts text with textContent.

import "./vendor/purify-3.4.18.min.js";
import { Marked } from "./vendor/marked-18.2.1.esm.js";
import { copyButton } from "./copy.js";

const DOMPurify = globalThis.DOMPurify;

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);

const marked = new Marked({ gfm: true, breaks: false, async: false });
marked.use({
  renderer: {
    html(token) { return esc(token.text || token.raw || ""); }, // raw HTML is text
    image(token) {
      const label = esc(token.text || token.href || "image");
      return `<a href="${esc(token.href || "")}">[image: ${label}]</a>`;
    },
  },
});

const PURIFY = {
  ALLOWED_TAGS: ["a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
                 "hr", "li", "ol", "p", "pre", "strong", "table", "tbody", "td", "th", "thead",
                 "tr", "ul"],
  ALLOWED_ATTR: ["href", "title", "start", "class", "align"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("rel", "noopener noreferrer nofollow");
    node.setAttribute("target", "_blank");
  }
  if (node.hasAttribute("class") && !/^language-[\w+-]{1,30}$/.test(node.getAttribute("class"))) {
    node.removeAttribute("class");
  }
});

/** Return the sanitised DOM fragment of Markdown `src`. */
export function markdownFragment(src) {
  return DOMPurify.sanitize(marked.parse(String(src || "")), PURIFY);
}

/** Render Markdown `src` into `target` (replacing its children); code blocks get copy buttons. */
export function renderMarkdown(target, src, { copy = true } = {}) {
  target.replaceChildren(markdownFragment(src));
  if (!copy) return;
  let n = 0;
  for (const pre of target.querySelectorAll("pre")) {
    n += 1;
    const code = pre.textContent;
    const wrap = document.createElement("div");
    wrap.className = "code";
    pre.replaceWith(wrap);
    wrap.append(copyButton(() => code, `Copy code block ${n}`), pre);
  }
}
