// The chat page (#/chat, #/chat/<session>): sessions, streamed answers, tool steps with their
// approvals in place, Stop. It uses only the public API: GET/POST /v1/sessions,
// GET /v1/sessions/{id}, POST /v1/sessions/{id}/messages (SSE), POST /v1/approvals/{id}.
//
// Model and tool text is inserted with textContent, except the answer, which goes through
// markdown.js (the one sanitising renderer).

import { registerPage, h, text } from "./app.js";
import { copyButton } from "./copy.js";

// The renderer (and its vendored libraries) loads after the page is on screen, not before
// it: until it is there, an answer shows as plain text, then it is rendered.
let markdown = null;
let markdownReady = null;

function loadMarkdown() {
  if (!markdownReady) markdownReady = import("./markdown.js").then((m) => { markdown = m; });
  return markdownReady;
}

const LONG_RESULT = 600; // characters; longer results start collapsed
const enc = encodeURIComponent;

registerPage("chat", { title: "Chat", mount });

function json(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch (_) {
    return String(value);
  }
}

function sessionLabel(s) {
  return s.name && s.name !== s.id ? s.name : `Session ${s.id.slice(0, 12)}`;
}

/** An answer bubble: text arrives in pieces and is rendered as Markdown once per frame. */
function answerBubble() {
  const body = h("div", { class: "md" });
  const el = h("article", { class: "msg assistant", "aria-label": "Answer" }, body);
  let source = "";
  let frame = 0;
  const render = () => {
    frame = 0;
    if (markdown) {
      markdown.renderMarkdown(body, source);
    } else {
      text(body, source);
      loadMarkdown().then(() => { if (!frame) frame = requestAnimationFrame(render); });
    }
  };
  el.append(h("div", { class: "msg-tools" }, copyButton(() => source, "Copy answer")));
  return {
    el,
    add(piece) {
      source += piece;
      if (!frame) frame = requestAnimationFrame(render);
    },
    set(all) {
      source = all;
      if (frame) cancelAnimationFrame(frame);
      render();
    },
    text: () => source,
  };
}

function userBubble(content) {
  return h("article", { class: "msg user", "aria-label": "You" }, h("p", { class: "plain" }, content));
}

/** A tool step: name, arguments, risk, sandbox, duration, result (collapsed when long). */
function toolStep(info, ctx, focusApproval) {
  const status = h("span", { class: "status" }, "running");
  const meta = h("span", { class: "meta" });
  const summary = h("summary", {}, h("span", { class: "tool-name" }, info.name), " ", status, " ", meta);
  const args = h("pre", { class: "args", "aria-label": `Arguments of ${info.name}` }, json(info.arguments));
  const approval = h("div", { class: "approval-slot" });
  const result = h("div", { class: "result-slot" });
  const el = h("details", { class: "step", "data-call-id": info.call_id || "" }, summary,
               h("div", { class: "step-body" }, h("h3", { class: "label" }, "Arguments"), args, approval, result));
  const bits = [];
  if (info.risk) bits.push(`risk ${String(info.risk).toLowerCase()}`);
  if (info.sandbox) bits.push(`sandbox ${info.sandbox}`);
  text(meta, bits.join(" · "));

  return {
    el,
    pending(p) {
      el.open = true;
      text(status, "waiting for approval");
      el.classList.add("waiting");
      const reasons = (p.reasons || []).length ? p.reasons.join("; ") : "its risk is at or above the threshold";
      const decide = async (approve, scope, button) => {
        for (const b of box.querySelectorAll("button")) b.disabled = true;
        try {
          await ctx.api(`/v1/approvals/${enc(p.id)}`, { method: "POST", body: { approve, scope } });
        } catch (e) {
          text(note, `Could not send the decision: ${e.message}`);
          for (const b of box.querySelectorAll("button")) b.disabled = false;
          button.focus();
        }
      };
      const allow = h("button", { type: "button", class: "allow" }, "Allow");
      const deny = h("button", { type: "button", class: "deny" }, "Deny");
      const always = h("button", { type: "button", class: "secondary" }, "Allow for this session");
      allow.addEventListener("click", () => decide(true, "once", allow));
      deny.addEventListener("click", () => decide(false, "once", deny));
      always.addEventListener("click", () => decide(true, "session", always));
      const note = h("p", { class: "muted" });
      const box = h("div", { class: "approval", role: "group", "aria-label": `Approve ${p.tool}?` },
        h("p", { class: "approval-q" }, h("strong", {}, `${p.tool} needs your approval`),
          ` (risk ${String(p.risk || "").toLowerCase()})`),
        h("p", {}, "Why: ", reasons),
        h("h3", { class: "label" }, "Exact arguments"),
        h("pre", { class: "args", "aria-label": `Exact arguments of ${p.tool}` }, json(p.arguments)),
        h("div", { class: "buttons" }, allow, deny, always),
        note);
      approval.replaceChildren(box);
      if (focusApproval) allow.focus();
    },
    resolved(r) {
      el.classList.remove("waiting");
      const who = r.by ? ` by ${r.by}` : "";
      const why = r.reason ? `: ${r.reason}` : "";
      approval.replaceChildren(h("p", { class: r.approved ? "ok" : "denied" },
        `${r.approved ? "Allowed" : "Denied"}${who}${why}`));
      text(status, r.approved ? "running" : "denied");
    },
    finish(f) {
      el.classList.remove("waiting");
      const ok = f.ok;
      text(status, ok ? "done" : f.decision === "denied" ? "denied" : "error");
      el.classList.add(ok ? "ok" : "failed");
      if (typeof f.duration_ms === "number") {
        bits.push(`${f.duration_ms < 10 ? f.duration_ms.toFixed(1) : Math.round(f.duration_ms)} ms`);
        text(meta, bits.join(" · "));
      }
      const out = f.error || f.text || "";
      const pre = h("pre", { class: "result", "aria-label": `Result of ${f.name || info.name}` }, out);
      const block = out.length > LONG_RESULT || out.split("\n").length > 12
        ? h("details", { class: "long" }, h("summary", {}, `Result (${out.length} characters)`), pre)
        : h("div", {}, h("h3", { class: "label" }, "Result"), pre);
      result.replaceChildren(block, copyButton(() => out, `Copy result of ${f.name || info.name}`));
    },
  };
}

function mount(root, ctx) {
  const state = { sid: ctx.params[0] || null, ctrl: null, sessions: [] };
  const list = h("ul", { class: "session-list" });
  const newBtn = h("button", { type: "button", class: "secondary" }, "New chat");
  const sessions = h("nav", { class: "sessions", "aria-label": "Sessions" },
                     h("h2", { class: "label" }, "Sessions"), newBtn, list);
  const heading = h("h1", { id: "page-title", class: "chat-title" }, "Chat");
  const log = h("div", { class: "transcript", role: "log", "aria-label": "Conversation",
                         "aria-busy": "false", tabIndex: 0 });
  const input = h("textarea", { id: "chat-input", rows: 2, name: "message",
                                placeholder: "Message (Enter sends, Shift+Enter: new line)" });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", class: "danger", disabled: true }, "Stop");
  const form = h("form", { class: "composer", "aria-label": "Message" },
                 h("label", { for: "chat-input", class: "visually-hidden" }, "Message"),
                 input, h("div", { class: "buttons" }, send, stop));
  const convo = h("div", { class: "conversation" }, heading, log, form);
  root.append(h("div", { class: "chat" }, sessions, convo));

  function setBusy(busy) {
    send.disabled = busy;
    stop.disabled = !busy;
    log.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function renderSessions() {
    list.replaceChildren(...state.sessions.map((s) => {
      const b = h("button", { type: "button", class: "session" }, sessionLabel(s));
      if (s.id === state.sid) b.setAttribute("aria-current", "true");
      b.addEventListener("click", () => select(s.id));
      return h("li", {}, b);
    }));
    const cur = state.sessions.find((s) => s.id === state.sid);
    text(heading, cur ? sessionLabel(cur) : state.sid ? `Session ${state.sid.slice(0, 12)}` : "New chat");
  }

  async function loadSessions() {
    try {
      const data = await ctx.api("/v1/sessions");
      state.sessions = (data.data || []).slice().sort((a, b) => (b.updated_at || 0) - (a.updated_at || 0));
    } catch (e) {
      state.sessions = [];
      if (e.status !== 409 && e.status !== 403) ctx.toast(`Sessions: ${e.message}`);
    }
    renderSessions();
  }

  function stepsFromHistory(messages) {
    const steps = new Map();
    const facts = new Map(); // call id -> the stored step (risk, sandbox, decision, approval)
    for (const m of messages) if (m.role === "tool" && m.step) facts.set(m.tool_call_id, m.step);
    for (const m of messages) {
      if (m.role === "user") {
        log.append(userBubble(m.content));
      } else if (m.role === "assistant") {
        if (m.content) {
          const b = answerBubble();
          b.set(m.content);
          log.append(b.el);
        }
        for (const c of m.tool_calls || []) {
          const f = facts.get(c.id) || {};
          const step = toolStep({ name: c.name, arguments: c.arguments, call_id: c.id,
                                  risk: f.risk, sandbox: f.sandbox }, ctx, false);
          steps.set(c.id, step);
          log.append(step.el);
        }
      } else if (m.role === "tool") {
        const step = steps.get(m.tool_call_id);
        if (!step) continue;
        const f = m.step || {}; // older messages have none: their outcome is read off the text
        if (f.approval && typeof f.approval.approved === "boolean") step.resolved(f.approval);
        step.finish({ ok: typeof f.ok === "boolean" ? f.ok : !/^\{"error"/.test(m.content || ""),
                      decision: f.decision, duration_ms: f.duration_ms, text: m.content,
                      name: m.name });
      }
    }
  }

  async function loadTranscript() {
    log.replaceChildren();
    if (!state.sid) {
      log.append(h("p", { class: "muted empty" }, "Start a conversation: type a message below."));
      return;
    }
    try {
      const first = await ctx.api(`/v1/sessions/${enc(state.sid)}?limit=1`);
      const offset = Math.max(0, first.total - 200);
      const page = await ctx.api(`/v1/sessions/${enc(state.sid)}?offset=${offset}&limit=200`);
      stepsFromHistory(page.messages || []);
      if (!log.childElementCount) {
        log.append(h("p", { class: "muted empty" }, "Start a conversation: type a message below."));
      }
      log.scrollTop = log.scrollHeight;
    } catch (e) {
      log.append(h("p", { class: "error", role: "alert" }, `${e.message}${e.fix ? ` (${e.fix})` : ""}`));
    }
  }

  async function select(sid) {
    if (state.ctrl) state.ctrl.abort();
    state.sid = sid;
    history.replaceState(null, "", sid ? `#/chat/${enc(sid)}` : "#/chat");
    renderSessions();
    await loadTranscript();
    input.focus();
  }

  async function newChat() {
    await select(null);
  }

  async function ensureSession() {
    if (state.sid) return state.sid;
    const created = await ctx.api("/v1/sessions", { method: "POST", body: {} });
    state.sid = created.id;
    history.replaceState(null, "", `#/chat/${enc(created.id)}`);
    log.replaceChildren();
    renderSessions();
    return created.id;
  }

  async function runTurn(content) {
    const ctrl = new AbortController();
    state.ctrl = ctrl;
    setBusy(true);
    const turn = h("div", { class: "turn" });
    let bubble = null;
    const steps = new Map(); // call id -> step
    const approvals = new Map(); // approval id -> step
    const follow = () => { log.scrollTop = log.scrollHeight; };
    try {
      const sid = await ensureSession();
      log.querySelector(".empty")?.remove();
      log.append(userBubble(content), turn);
      follow();
      await ctx.sse(`/v1/sessions/${enc(sid)}/messages`, { content }, (name, data) => {
        if (name === "text") {
          if (!bubble) {
            bubble = answerBubble();
            turn.append(bubble.el);
          }
          bubble.add(data.text);
        } else if (name === "tool_started") {
          bubble = null; // text after a tool step is a new paragraph of the answer
          const step = toolStep(data, ctx, true);
          steps.set(data.call_id, step);
          turn.append(step.el);
        } else if (name === "approval_pending") {
          let step = steps.get(data.call_id);
          if (!step) {
            step = toolStep({ name: data.tool, arguments: data.arguments, call_id: data.call_id,
                              risk: data.risk }, ctx, true);
            steps.set(data.call_id, step);
            turn.append(step.el);
          }
          approvals.set(data.id, step);
          step.pending(data);
        } else if (name === "approval_resolved") {
          approvals.get(data.id)?.resolved(data);
        } else if (name === "tool_finished") {
          steps.get(data.call_id)?.finish(data);
        } else if (name === "done") {
          if (bubble && data.answer && bubble.text() !== data.answer) bubble.set(data.answer);
          else if (!bubble && data.answer) {
            bubble = answerBubble();
            bubble.set(data.answer);
            turn.append(bubble.el);
          }
        } else if (name === "error") {
          turn.append(h("p", { class: "error", role: "alert" }, data.message || "the turn failed"));
        }
        follow();
      }, ctrl.signal);
    } catch (e) {
      if (e.name === "AbortError") {
        turn.append(h("p", { class: "muted", role: "status" }, "Stopped."));
      } else {
        turn.append(h("p", { class: "error", role: "alert" }, `${e.message}${e.fix ? ` (${e.fix})` : ""}`));
      }
    } finally {
      if (state.ctrl === ctrl) state.ctrl = null;
      setBusy(false);
      loadSessions();
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const content = input.value.trim();
    if (!content || state.ctrl) return;
    input.value = "";
    runTurn(content);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => {
    if (state.ctrl) state.ctrl.abort();
    input.focus();
  });
  newBtn.addEventListener("click", newChat);

  loadSessions();
  loadTranscript();
  input.focus();
  requestAnimationFrame(() => setTimeout(loadMarkdown, 0)); // once the page is painted
  return () => {
    if (state.ctrl) state.ctrl.abort();
  };
}
