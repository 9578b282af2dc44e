// Audit page: filter the tamper-evident log (user, tool, decision, model, kind, time), open
// one record, verify the hash chain and signatures. Data: GET /v1/audit/events,
// GET /v1/audit/verify.
import { registerPage } from '../app.js';
import { el, append, replace, when, problem, statusLine } from './dom.js';

const DECISIONS = ['', 'allowed', 'approved', 'denied', 'error', 'ok'];

function field(id, labelText, input) {
  input.id = id;
  input.name = id.replace(/^audit-/, '');
  return el('div', { class: 'page-field' }, el('label', { for: id }, labelText), input);
}

function principal(e) {
  const p = e.detail && typeof e.detail === 'object' ? e.detail.principal : null;
  return p && p.user ? p.user : '';
}

function mount(root, ctx) {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const status = statusLine('Audit status');
  const verdict = el('p', { role: 'status', 'aria-label': 'Verify result', class: 'page-verdict' });
  const rows = el('tbody');
  const detail = el('section', { 'aria-label': 'Audit record', class: 'page-detail', hidden: true });
  const inputs = {
    user: el('input', { type: 'text', autocomplete: 'off' }),
    tool: el('input', { type: 'text', autocomplete: 'off' }),
    decision: el('select', {}, DECISIONS.map((d) => el('option', { value: d }, d || 'any'))),
    model: el('input', { type: 'text', autocomplete: 'off', placeholder: 'sha256, URL or id' }),
    kind: el('input', { type: 'text', autocomplete: 'off', placeholder: 'e.g. tool.call' }),
    since: el('input', { type: 'text', autocomplete: 'off', placeholder: '7d or 2026-01-31' }),
    until: el('input', { type: 'text', autocomplete: 'off', placeholder: '1h or a date' }),
  };
  const say = (msg) => { status.textContent = msg; };
  let asked = 0; // only the newest query's answer is shown

  async function load(ev) {
    if (ev) ev.preventDefault();
    const mine = ++asked;
    const params = new URLSearchParams({ limit: '200' });
    for (const [key, input] of Object.entries(inputs)) {
      if (input.value.trim()) params.set(key, input.value.trim());
    }
    try {
      const body = await ctx.api(`/v1/audit/events?${params}`, { signal });
      if (mine !== asked) return;
      const events = body.events || [];
      replace(rows, events.map(row));
      say(`${events.length} record${events.length === 1 ? '' : 's'}.`);
    } catch (err) {
      if (!signal.aborted) say(problem(err));
    }
  }

  function row(e) {
    return el('tr', {},
      el('td', {}, String(e.id)),
      el('td', {}, when(e.ts)),
      el('td', {}, e.kind || ''),
      el('td', {}, principal(e)),
      el('td', {}, e.tool || ''),
      el('td', {}, e.decision || ''),
      el('td', {}, e.session_name || e.session_id || ''),
      el('td', {}, el('button', { type: 'button', 'aria-label': `Open record ${e.id}`,
        onclick: () => open(e) }, 'Open')));
  }

  function open(e) {
    const { hash, ...rest } = e;
    replace(detail,
      el('h2', {}, `Record ${e.id}`),
      el('p', { class: 'page-meta' }, `${e.kind} at ${when(e.ts)}; hash ${hash}`),
      el('pre', { class: 'page-args' }, JSON.stringify(rest, null, 2)),
      el('button', { type: 'button', onclick: () => { detail.hidden = true; } }, 'Close record'));
    detail.hidden = false;
    detail.querySelector('button').focus();
  }

  async function verify() {
    verdict.textContent = 'Verifying...';
    try {
      const r = await ctx.api('/v1/audit/verify', { signal });
      verdict.className = `page-verdict ${r.ok ? 'ok' : 'bad'}`;
      verdict.textContent = r.ok
        ? `Verified: ${r.checked} records, ${r.checkpoints} signed checkpoints${r.pinned ? '' : ' (key not pinned)'}.`
        : `Verification FAILED at record ${r.first_bad}: ${r.reason}`;
    } catch (err) {
      verdict.textContent = problem(err);
    }
  }

  const form = el('form', { 'aria-label': 'Filter audit records', class: 'page-filters', onsubmit: load },
    field('audit-user', 'User', inputs.user),
    field('audit-tool', 'Tool', inputs.tool),
    field('audit-decision', 'Decision', inputs.decision),
    field('audit-model', 'Model', inputs.model),
    field('audit-kind', 'Kind', inputs.kind),
    field('audit-since', 'Since', inputs.since),
    field('audit-until', 'Until', inputs.until),
    el('button', { type: 'submit' }, 'Filter'));
  const table = el('table', { 'aria-label': 'Audit records', class: 'page-table' },
    el('thead', {}, el('tr', {}, ['#', 'Time', 'Kind', 'User', 'Tool', 'Decision', 'Session', '']
      .map((h) => el('th', { scope: 'col' }, h)))),
    rows);
  append(root, [
    el('h1', { id: 'page-title' }, 'Audit'),
    el('div', { class: 'page-actions' },
      el('button', { type: 'button', onclick: verify }, 'Verify the audit log'), verdict),
    form, status, detail, el('div', { class: 'page-scroll' }, table),
  ]);
  load();
  return () => ctrl.abort();
}

registerPage('audit', { title: 'Audit', needsScope: 'audit:read', mount });
