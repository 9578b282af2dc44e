// bastion web UI: the shell (sign-in, navigation, hash router, toasts) and the page interface.
//
// Interface for page modules (plain ES modules under /web/, loaded by pages/index.js):
//
//   import { registerPage, h, text } from "../app.js";
//   registerPage(id, { title, icon?, needsScope?, mount(root, ctx) });
//     - page modules load after sign-in (they may call the API as they load) and may
//       register later (e.g. once the server says their feature is on); a deep link to a
//       page not registered yet shows "Loading…" until it is, or "Not found"
//     - the page's route is `#/<id>`; `#/<id>/<rest...>` passes ctx.params = [rest...]
//     - mount(root, ctx) fills `root` (an empty <section>) and may return an unmount function,
//       called when the user leaves the page (abort your fetches/streams there)
//     - needsScope: the API scope the page needs (e.g. "audit:read"); without it the page is
//       left out of the navigation and shows why (admin keys have every scope)
//     - ctx = { api, sse, me, toast(msg), params, navigate(hash) }
//   api(path, {method, body, signal}) -> parsed JSON; throws an Error with .status, .message, .fix
//   sse(path, body, onEvent(name, data), signal) -> Promise (body null: GET, else POST JSON)
//   me() -> {user, roles, scopes} (scopes null when the server does not say)
//   h(tag, attrs, ...children): a new element; children are nodes or strings (inserted as text);
//     attrs set properties/attributes: "class", "aria-*", "data-*", on<event>: function; never HTML
//   text(el, s): set an element's text (never HTML), returns el
//
// Security: no page ever assigns innerHTML/outerHTML or uses insertAdjacentHTML; model- and
// tool-derived text goes in as text, except through markdown.js (the one sanitising renderer).

import { api, sse, me, login, logout, onSignedOut, signedIn, ssoAvailable } from "./api.js";

const pages = new Map();
let current = null; // {id, unmount}
let loaded = false; // the chat page is loaded (the shell can route)
let allLoaded = false; // pages/index.js and every page it imports are loaded
let signedInNow = false;

/** Set the text of `el` to `s` (never parsed as HTML); return `el`. */
export function text(el, s) {
  el.textContent = s === undefined || s === null ? "" : String(s);
  return el;
}

const PROPS = new Set(["value", "checked", "disabled", "hidden", "type", "name", "id", "title",
                       "placeholder", "href", "htmlFor", "tabIndex", "autocomplete", "rows",
                       "open", "selected", "required", "multiple", "accept", "min", "max", "step",
                       "role", "lang", "spellcheck", "readOnly", "download", "target", "rel"]);

/** Return a new `tag` element with `attrs` and `children` (strings become text nodes). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === "class") {
      el.className = v;
    } else if (k === "text") {
      text(el, v);
    } else if (k === "href" && /^\s*javascript:/i.test(String(v))) {
      throw new Error("h(): refusing a javascript: URL");
    } else if (PROPS.has(k)) {
      el[k] = v;
    } else if (k.startsWith("aria-") || k.startsWith("data-") || k === "for") {
      el.setAttribute(k, v === true ? "true" : String(v));
    } else {
      throw new Error(`h(): unsupported attribute ${k}`);
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Show a short message for a few seconds (announced to screen readers). */
export function toast(msg) {
  const box = document.getElementById("toasts");
  const item = h("div", { class: "toast" }, String(msg));
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

/** Register a page of the UI (see the interface at the top of this file). */
export function registerPage(id, spec) {
  if (!/^[a-z][a-z0-9-]*$/.test(id)) throw new Error(`bad page id ${id}`);
  if (typeof spec.mount !== "function") throw new Error(`page ${id} has no mount()`);
  pages.set(id, spec);
  if (loaded && signedInNow) {
    renderNav();
    if (current !== null && current.id === id) route(); // it was waited for
  }
}

function allowed(spec, who) {
  if (!spec.needsScope || who.scopes === null) return true;
  return who.scopes.includes("admin") || who.scopes.includes(spec.needsScope);
}

function parseHash() {
  const m = /^#\/([a-z][a-z0-9-]*)((?:\/[^/]*)*)$/.exec(location.hash);
  if (!m) return { id: pages.has("chat") ? "chat" : [...pages.keys()][0], params: [] };
  const params = m[2] ? m[2].slice(1).split("/").map(decodeURIComponent) : [];
  return { id: m[1], params };
}

async function renderNav() {
  const nav = document.getElementById("nav");
  const who = await me().catch(() => ({ scopes: [] }));
  const active = parseHash().id;
  const list = h("ul", {});
  for (const [id, spec] of pages) {
    if (!allowed(spec, who)) continue;
    const link = h("a", { href: `#/${id}` }, spec.icon ? h("span", { "aria-hidden": true }, spec.icon + " ") : null,
                   spec.title);
    if (id === active) link.setAttribute("aria-current", "page");
    list.append(h("li", {}, link));
  }
  nav.replaceChildren(list);
  nav.hidden = false;
}

async function route() {
  const main = document.getElementById("main");
  const { id, params } = parseHash();
  if (current && current.unmount) {
    try { current.unmount(); } catch (e) { console.error(e); }
  }
  current = null;
  const spec = pages.get(id);
  const root = h("section", { class: `page page-${id}`, "aria-labelledby": "page-title" });
  main.replaceChildren(root);
  if (!spec && !allLoaded) { // a page that is still loading registers and routes again
    root.append(h("p", { class: "muted", id: "page-title" }, "Loading…"));
    current = { id, unmount: null };
    return;
  }
  if (!spec) {
    root.append(h("h1", { id: "page-title" }, "Not found"),
                h("p", {}, "No such page. ", h("a", { href: "#/chat" }, "Go to the chat")));
    current = { id, unmount: null };
    return;
  }
  document.title = `${spec.title} · bastion`;
  const who = await me().catch(() => ({ scopes: [] }));
  if (!allowed(spec, who)) {
    root.append(h("h1", { id: "page-title" }, spec.title),
                h("p", {}, `This page needs an API key with the scope ${spec.needsScope}.`));
    current = { id, unmount: null };
    return;
  }
  const ctx = { api, sse, me, toast, params, navigate: (hash) => { location.hash = hash; } };
  current = { id, unmount: null };
  try {
    const unmount = await spec.mount(root, ctx);
    if (current && current.id === id) current.unmount = typeof unmount === "function" ? unmount : null;
  } catch (e) {
    root.append(h("p", { class: "error", role: "alert" }, `This page failed: ${e.message}`));
  }
  renderNav();
}

function renderWho(who) {
  const box = document.getElementById("who");
  const out = h("button", { type: "button", class: "secondary", onclick: signOut }, "Sign out");
  box.replaceChildren(who.user ? h("span", { class: "muted" }, `Signed in as ${who.user}`) : "", out);
  box.hidden = false;
}

async function signOut() {
  await logout();
}

function showLogin(message) {
  if (current && current.unmount) {
    try { current.unmount(); } catch (e) { console.error(e); }
  }
  current = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  document.title = "Sign in · bastion";
  const main = document.getElementById("main");
  const key = h("input", { type: "password", id: "login-key", name: "key", autocomplete: "off",
                           required: true, spellcheck: false });
  const status = h("p", { class: "error", role: "alert" }, message || "");
  const form = h("form", { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in to bastion"),
    h("label", { for: "login-key" }, "API key"),
    key,
    h("p", { class: "muted" }, "Create one with: bastion keys create --user NAME"),
    h("button", { type: "submit" }, "Sign in"),
    status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    text(status, "");
    try {
      await login(key.value);
      key.value = "";
      await start();
    } catch (e) {
      text(status, e.fix ? `${e.message} (${e.fix})` : e.message);
      key.focus();
    }
  });
  main.replaceChildren(form);
  ssoAvailable().then((start) => {
    if (!start) return;
    const sso = h("button", { type: "button", class: "secondary",
                              onclick: () => { location.assign(start); } },
                  "Sign in with SSO");
    form.append(h("p", {}, sso));
  });
  key.focus();
}

let chatLoading = null;
let othersLoading = null;

/** Load the chat page's code (no data: it may load before anyone is signed in). */
function loadChat() {
  if (!chatLoading) {
    chatLoading = import("./chat.js").then(() => {
      loaded = true;
      window.addEventListener("hashchange", () => { if (signedInNow) route(); });
    });
  }
  return chatLoading;
}

/** Load the other pages in the background once signed in (a page may call the API as it
 * loads, e.g. to register itself only where the server offers its feature). */
function loadOtherPages() {
  if (!othersLoading) {
    othersLoading = import("./pages/index.js").catch((e) => {
      console.error(e);
      toast(`Some pages failed to load: ${e.message}`);
    }).finally(() => {
      allLoaded = true;
      if (signedInNow && current && !pages.has(current.id)) route(); // still not there
    });
  }
  return othersLoading;
}

async function start() {
  const who = await me();
  signedInNow = true;
  renderWho(who);
  await loadChat();
  await renderNav();
  await route();
  loadOtherPages(); // after the first page is up: they are not needed for it
}

onSignedOut(() => {
  if (!signedInNow) return;
  signedInNow = false;
  showLogin("You are signed out.");
});

async function boot() {
  loadChat(); // in parallel with asking who is signed in
  let ok = false;
  try {
    ok = await signedIn();
  } catch (e) {
    showLogin(`The server did not answer: ${e.message}`);
    return;
  }
  if (ok) await start();
  else showLogin("");
}

boot();
