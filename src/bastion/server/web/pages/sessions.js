// Sessions page: list, semantic search, open in chat, rename, export (Markdown/JSON), delete.
// Data: GET /v1/sessions, POST /v1/search, PATCH|DELETE /v1/sessions/{id},
// GET /v1/sessions/{id}/export?format=markdown|json.
import { registerPage } from '../app.js';
import { el, append, replace, when, problem, statusLine, confirmDialog, saveFile } from './dom.js';

function label(s) {
  return s.name || s.id;
}

function fileName(s, ext) {
  const base = label(s).replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 80) || 'session';
  return `${base}.${ext}`;
}

/** Where the chat page shows one session. */
export function chatHref(sessionId) {
  return `#/chat/${encodeURIComponent(sessionId)}`;
}

function mount(root, ctx) {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const status = statusLine('Sessions status');
  const list = el('ul', { class: 'page-list', 'aria-label': 'Sessions' });
  const results = el('ul', { class: 'page-list', 'aria-label': 'Search results' });
  const query = el('input', { type: 'search', id: 'sessions-query', name: 'query', required: true,
    autocomplete: 'off', 'aria-label': 'Search sessions and documents' });
  const say = (msg) => { status.textContent = msg; };

  async function load() {
    try {
      const body = await ctx.api('/v1/sessions', { signal });
      render(body.data || []);
    } catch (err) {
      if (!signal.aborted) say(problem(err));
    }
  }

  function render(rows) {
    replace(list, rows.length ? rows.map(row) : el('li', {}, 'No sessions yet.'));
  }

  function row(s) {
    const name = label(s);
    const item = el('li', { class: 'page-item' });
    const title = el('a', { href: chatHref(s.id), 'aria-label': `Open ${name}` }, name);
    const meta = el('span', { class: 'page-meta' },
      `${s.messages} messages, last used ${when(s.updated_at)}`);
    const actions = el('div', { class: 'page-actions' },
      el('button', { type: 'button', 'aria-label': `Rename ${name}`, onclick: () => rename(item, s) }, 'Rename'),
      el('button', { type: 'button', 'aria-label': `Export ${name} as Markdown`,
        onclick: () => exportAs(s, 'markdown') }, 'Markdown'),
      el('button', { type: 'button', 'aria-label': `Export ${name} as JSON`,
        onclick: () => exportAs(s, 'json') }, 'JSON'),
      el('button', { type: 'button', 'aria-label': `Delete ${name}`, class: 'danger',
        onclick: () => remove(s) }, 'Delete'));
    return append(item, [title, ' ', meta, actions]);
  }

  function rename(item, s) {
    const name = label(s);
    const input = el('input', { type: 'text', value: s.name || '', required: true, maxlength: 200,
      'aria-label': `New name for ${name}` });
    const form = el('form', { class: 'page-inline', 'aria-label': `Rename ${name}` },
      input,
      el('button', { type: 'submit' }, 'Save'),
      el('button', { type: 'button', onclick: () => load() }, 'Cancel'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        await ctx.api(`/v1/sessions/${encodeURIComponent(s.id)}`,
          { method: 'PATCH', body: { name: input.value.trim() }, signal });
        say(`Renamed ${name} to ${input.value.trim()}.`);
        await load();
      } catch (err) {
        say(problem(err));
      }
    });
    replace(item, form);
    input.focus();
  }

  async function exportAs(s, format) {
    try {
      const path = `/v1/sessions/${encodeURIComponent(s.id)}/export?format=${format}`;
      if (format === 'json') {
        const data = await ctx.api(path, { signal });
        saveFile(fileName(s, 'json'), JSON.stringify(data, null, 2), 'application/json');
      } else {
        const text = await ctx.api(path, { signal, text: true });
        saveFile(fileName(s, 'md'), typeof text === 'string' ? text : String(text), 'text/markdown');
      }
      say(`Exported ${label(s)} as ${format === 'json' ? 'JSON' : 'Markdown'}.`);
    } catch (err) {
      say(problem(err));
    }
  }

  async function remove(s) {
    const name = label(s);
    if (!(await confirmDialog(root, `Delete session ${name} and its messages?`, 'Delete'))) return;
    try {
      await ctx.api(`/v1/sessions/${encodeURIComponent(s.id)}`, { method: 'DELETE', signal });
      say(`Deleted ${name}.`);
      await load();
    } catch (err) {
      say(problem(err));
    }
  }

  async function search(ev) {
    ev.preventDefault();
    const q = query.value.trim();
    if (!q) return;
    say('Searching...');
    try {
      const body = await ctx.api('/v1/search', { method: 'POST', body: { query: q, k: 10 }, signal });
      const hits = body.data || [];
      replace(results, hits.length ? hits.map(hit) : el('li', {}, 'Nothing found.'));
      say(`${hits.length} result${hits.length === 1 ? '' : 's'} for ${q}.`);
    } catch (err) {
      say(problem(err));
    }
  }

  function hit(r) {
    const where = r.kind === 'document' ? `document ${r.source}` : `session ${r.source}`;
    const item = el('li', { class: 'page-item' },
      el('span', { class: 'page-meta' }, `${where} (score ${r.score})`),
      el('p', { class: 'page-snippet' }, r.text));
    if (r.session_id) {
      item.append(el('a', { href: chatHref(r.session_id), 'aria-label': `Open session ${r.source}` }, 'Open'));
    }
    return item;
  }

  const form = el('form', { role: 'search', 'aria-label': 'Search memory', onsubmit: search },
    el('label', { for: 'sessions-query' }, 'Search'), ' ', query, ' ',
    el('button', { type: 'submit' }, 'Search'));
  append(root, [
    el('h1', { id: 'page-title' }, 'Sessions'),
    form,
    el('section', { 'aria-label': 'Search results section' }, results),
    status,
    el('p', {}, el('a', { href: '#/chat' }, 'New chat')),
    el('h2', {}, 'All sessions'),
    list,
  ]);
  load();
  return () => ctrl.abort();
}

registerPage('sessions', { title: 'Sessions', needsScope: 'sessions:read', mount });
