// Approvals inbox: every pending tool call this key may decide (its own sessions; every
// session for a user with the approver role), live over GET /v1/approvals/events, decided
// with POST /v1/approvals/{id}. The arguments are shown exactly as the tool will get them.
import { registerPage } from '../app.js';
import { el, append, replace, problem, statusLine } from './dom.js';

function mount(root, ctx) {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const status = statusLine('Approvals status');
  const list = el('ul', { class: 'page-list', 'aria-label': 'Pending approvals' });
  const say = (msg) => { status.textContent = msg; };
  let loading = null;
  let again = false;

  async function load() {
    if (loading) { again = true; return loading; }
    loading = (async () => {
      do {
        again = false;
        try {
          const body = await ctx.api('/v1/approvals', { signal });
          const pending = body.pending || [];
          replace(list, pending.length ? pending.map(card) : el('li', {}, 'Nothing is waiting for you.'));
        } catch (err) {
          if (!signal.aborted) say(problem(err));
        }
      } while (again && !signal.aborted);
      loading = null;
    })();
    return loading;
  }

  function card(p) {
    const session = p.session_name || p.session_id || 'no session';
    const what = `${p.tool} in ${session}`;
    const reason = el('input', { type: 'text', maxlength: 2000, 'aria-label': `Reason for ${what}` });
    const decide = (approve, scope) => async () => {
      try {
        await ctx.api(`/v1/approvals/${encodeURIComponent(p.id)}`, { method: 'POST', signal,
          body: { approve, scope, reason: reason.value.trim() || null } });
        say(`${approve ? 'Allowed' : 'Denied'} ${what}.`);
      } catch (err) {
        say(problem(err));
      }
      load();
    };
    return el('li', { class: 'page-item', 'aria-label': `Approval: ${what}` },
      el('h2', {}, `${p.tool} `, el('span', { class: `risk risk-${String(p.risk).toLowerCase()}` }, p.risk)),
      el('p', { class: 'page-meta' }, `session ${session}; ${Math.round(p.seconds_left)} s left before it is denied`),
      (p.reasons || []).length ? el('p', {}, `Why: ${p.reasons.join('; ')}`) : null,
      el('p', { class: 'page-meta' }, 'Arguments, exactly as the tool gets them:'),
      el('pre', { class: 'page-args' }, JSON.stringify(p.arguments, null, 2)),
      reason,
      el('div', { class: 'page-actions' },
        el('button', { type: 'button', onclick: decide(true, 'once'), 'aria-label': `Allow ${what}` }, 'Allow'),
        el('button', { type: 'button', onclick: decide(true, 'session'),
          'aria-label': `Allow ${p.tool} for the rest of ${session}` }, 'Allow for this session'),
        el('button', { type: 'button', class: 'danger', onclick: decide(false, 'once'),
          'aria-label': `Deny ${what}` }, 'Deny')));
  }

  append(root, [el('h1', { id: 'page-title' }, 'Approvals'), status, list]);
  load();
  // Live: any approval event re-reads the list (the server filters what this key may see).
  Promise.resolve(ctx.sse('/v1/approvals/events', null, () => load(), signal)).catch((err) => {
    if (!signal.aborted) say(`Live updates stopped: ${problem(err)}`);
  });
  return () => ctrl.abort();
}

registerPage('approvals', { title: 'Approvals', needsScope: 'approvals', mount });
