// Small DOM helpers for the pages: text only, never HTML (the CSP forbids inline script and
// style; nothing from the server is ever parsed as markup).

/** Create an element; attrs: attributes (strings), on<event>: listeners, children: nodes/text. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (key === 'value') {
      node.value = value;
    } else {
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(node, children);
  return node;
}

/** Append children (nodes, strings as text, arrays; null/undefined skipped). */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace all children of ``node``. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** A local date-time for a Unix timestamp in seconds. */
export function when(ts) {
  if (typeof ts !== 'number' || !isFinite(ts)) return '';
  return new Date(ts * 1000).toLocaleString();
}

/** A byte count for people (KB, MB). */
export function bytes(n) {
  if (typeof n !== 'number') return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

/** The one-line message of an API error (with its fix when there is one). */
export function problem(err) {
  if (!err) return 'unknown error';
  const msg = err.message || String(err);
  return err.fix && !msg.includes(err.fix) ? `${msg} (fix: ${err.fix})` : msg;
}

/** A status line that screen readers announce. */
export function statusLine(label) {
  return el('p', { role: 'status', 'aria-live': 'polite', 'aria-label': label, class: 'page-status' });
}

/** Ask in a modal dialog; resolves true for the confirm button. */
export function confirmDialog(root, question, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = el('dialog', { 'aria-label': question, class: 'page-dialog' });
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    append(dialog, [
      el('p', {}, question),
      el('div', { class: 'page-actions' },
        el('button', { type: 'button', onclick: () => done(true) }, confirmLabel),
        el('button', { type: 'button', onclick: () => done(false) }, 'Cancel')),
    ]);
    dialog.addEventListener('cancel', (ev) => { ev.preventDefault(); done(false); });
    root.append(dialog);
    dialog.showModal();
  });
}

/** Save ``data`` as a file download named ``name``. */
export function saveFile(name, data, type) {
  const url = URL.createObjectURL(new Blob([data], { type }));
  const a = el('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
