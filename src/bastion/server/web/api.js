// The web UI's only way to the server: bastion's public JSON/SSE API (no private endpoints).
//
// api(path, {method, body, signal})  -> parsed JSON (or text), throws ApiError {status, message, fix}
// sse(path, body, onEvent, signal)    -> Promise resolved when the stream ends; onEvent(name, data)
//                                        (body null/undefined: GET; else POST JSON)
// me()                                -> {user, roles, scopes} of who is signed in (cached)
// login(key), logout(), signedIn(), ssoAvailable(), onSignedOut(fn)
//
// Credentials: the server's cookie session (POST /v1/auth/login sets an HttpOnly,
// SameSite=Strict cookie that this page cannot read). The API key itself is never stored
// anywhere in the browser: it goes to /v1/auth/login once and is forgotten.

let meCache = null;
const signedOutHandlers = [];

/** An error answer of the API: `status`, one-line `message`, the `fix` to show. */
export class ApiError extends Error {
  constructor(status, message, fix, code) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.fix = fix || "";
    this.code = code || "";
  }
}

function request(method, body, signal, accept) {
  const init = { method, signal, credentials: "same-origin", cache: "no-store",
                 headers: { Accept: accept } };
  if (body instanceof FormData || body instanceof Blob) {
    init.body = body;
  } else if (body !== undefined && body !== null) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return init;
}

async function errorOf(resp) {
  let err = {};
  try { err = (await resp.json()).error || {}; } catch (_) { /* not JSON */ }
  const fallback = resp.status === 401 ? "wrong or expired API key" : `HTTP ${resp.status}`;
  const message = typeof err.message === "string" ? err.message : fallback;
  if (resp.status === 401) signedOut();
  return new ApiError(resp.status, message, err.fix, err.code);
}

function signedOut() {
  meCache = null;
  for (const fn of signedOutHandlers) fn();
}

/** Call the API; return its parsed JSON (text for non-JSON answers, null for 204). */
export async function api(path, { method = "GET", body, signal, headers } = {}) {
  const init = request(method, body, signal, "application/json");
  if (headers) Object.assign(init.headers, headers);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await errorOf(resp);
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

/** POST `body` (GET when null) to an SSE route; call onEvent(name, data) for each event. */
export async function sse(path, body, onEvent, signal) {
  const method = body === undefined || body === null ? "GET" : "POST";
  const resp = await fetch(path, request(method, body, signal, "text/event-stream"));
  if (!resp.ok) throw await errorOf(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) !== -1) {
      const frame = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      dispatch(frame, onEvent);
    }
  }
  if (buf.trim()) dispatch(buf, onEvent);
}

function dispatch(frame, onEvent) {
  let name = "message";
  const data = [];
  for (const line of frame.split(/\r?\n/)) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  const raw = data.join("\n");
  let parsed = raw;
  try { parsed = JSON.parse(raw); } catch (_) { /* [DONE] and other plain data */ }
  onEvent(name, parsed);
}

let preloaded = true; // index.html preloads GET /v1/auth/me: the first ask takes that answer

async function askWho() {
  if (!preloaded) return api("/v1/auth/me");
  preloaded = false;
  // The same request as the preload (credentials, no custom headers), so the browser hands
  // over the response it already has instead of asking again.
  const resp = await fetch("/v1/auth/me", { credentials: "include" });
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

/** Who is signed in: {user, roles, scopes, via} (cached; refresh: ask again). */
export async function me(refresh = false) {
  if (meCache && !refresh) return meCache;
  const who = await askWho();
  meCache = { user: who.user, roles: who.roles || [], scopes: who.scopes || [], via: who.via };
  return meCache;
}

/** Where to start single sign-on (OIDC), or null when the server offers none. */
export async function ssoAvailable() {
  try {
    const info = await fetch("/v1/auth/providers", { credentials: "same-origin" });
    if (!info.ok) return null;
    const body = await info.json();
    return body.oidc && typeof body.oidc_login === "string" && body.oidc_login.startsWith("/")
      ? body.oidc_login : null;
  } catch (_) {
    return null;
  }
}

/** Sign in with an API key: the server answers with its session cookie. */
export async function login(key) {
  key = key.trim();
  if (!key) throw new ApiError(400, "enter an API key", "bastion keys create --user NAME");
  const resp = await fetch("/v1/auth/login", {
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ api_key: key }),
  });
  if (!resp.ok) {
    let err = {};
    try { err = (await resp.json()).error || {}; } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, err.message || `HTTP ${resp.status}`, err.fix, err.code);
  }
  return me(true);
}

/** Sign out: end the cookie session on the server. */
export async function logout() {
  try {
    await fetch("/v1/auth/logout", { method: "POST", credentials: "same-origin" });
  } catch (_) { /* signed out locally either way */ }
  signedOut();
}

/** Whether this browser has a live session (asks the server). */
export async function signedIn() {
  try {
    await me(true);
    return true;
  } catch (e) {
    if (e.status === 401 || e.status === 403) return false;
    throw e;
  }
}

/** Call `fn` whenever the server says the credentials are gone (401) or on logout. */
export function onSignedOut(fn) {
  signedOutHandlers.push(fn);
}
