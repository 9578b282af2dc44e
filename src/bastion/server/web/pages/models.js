// Models page (models:admin): installed models, pull one from the Hugging Face Hub with a
// progress bar, switch the model bastion answers with. Data: GET /v1/models/pulled,
// POST /v1/models/pull (SSE: progress, then done or error), POST /v1/models/use.
import { registerPage } from '../app.js';
import { el, append, replace, when, bytes, problem, statusLine } from './dom.js';

function mount(root, ctx) {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const status = statusLine('Models status');
  const list = el('ul', { class: 'page-list', 'aria-label': 'Installed models' });
  const bar = el('progress', { max: 1, value: 0, 'aria-label': 'Pull progress', hidden: true });
  const spec = el('input', { type: 'text', id: 'models-spec', required: true, autocomplete: 'off',
    maxlength: 300, placeholder: 'owner/repo:Q4_K_M' });
  const pullButton = el('button', { type: 'submit' }, 'Pull');
  const say = (msg) => { status.textContent = msg; };

  async function load() {
    try {
      const body = await ctx.api('/v1/models/pulled', { signal });
      const models = body.data || [];
      replace(list, models.length ? models.map(row) : el('li', {}, 'No models installed.'));
    } catch (err) {
      if (!signal.aborted) say(problem(err));
    }
  }

  function row(m) {
    return el('li', { class: 'page-item' },
      el('span', { class: 'page-name' }, m.id), ' ',
      m.in_use ? el('strong', {}, '(in use) ') : null,
      el('span', { class: 'page-meta' },
        `${bytes(m.size)}, ${m.repo || 'imported'}, sha256 ${String(m.sha256 || '').slice(0, 12)}, ${when(m.created)}`),
      m.in_use ? null : el('div', { class: 'page-actions' },
        el('button', { type: 'button', 'aria-label': `Use ${m.id}`, onclick: () => use(m) }, 'Use')));
  }

  async function use(m) {
    try {
      const r = await ctx.api('/v1/models/use', { method: 'POST', body: { model: m.id }, signal });
      say(r.message || `Switched to ${m.id}.`);
      await load();
    } catch (err) {
      say(problem(err));
    }
  }

  async function pull(ev) {
    ev.preventDefault();
    const model = spec.value.trim();
    if (!model) return;
    pullButton.disabled = true;
    bar.hidden = false;
    bar.removeAttribute('value'); // indeterminate until the first progress event
    say(`Pulling ${model}...`);
    let finished = false;
    try {
      await ctx.sse('/v1/models/pull', { model }, (name, data) => {
        if (name === 'progress' && data.total) {
          bar.max = data.total;
          bar.value = data.done;
          const pct = Math.floor((100 * data.done) / data.total);
          say(`${data.file}: ${pct}% (${bytes(data.done)} of ${bytes(data.total)}${data.eta_s != null ? `, ${Math.round(data.eta_s)} s left` : ''})`);
        } else if (name === 'done') {
          finished = true;
          bar.max = 1;
          bar.value = 1;
          say(`Pulled ${data.name || model} (${bytes(data.size)}).`);
        } else if (name === 'error') {
          finished = true;
          say(problem(data));
        }
      }, signal);
      if (!finished) say(`The pull of ${model} ended without a result.`);
    } catch (err) {
      if (!signal.aborted) say(problem(err));
    } finally {
      pullButton.disabled = false;
    }
    await load();
  }

  append(root, [
    el('h1', { id: 'page-title' }, 'Models'),
    el('form', { 'aria-label': 'Pull a model', onsubmit: pull },
      el('label', { for: 'models-spec' }, 'Model to pull (Hugging Face repo)'), ' ', spec, ' ', pullButton),
    bar, status,
    el('h2', {}, 'Installed'), list,
  ]);
  load();
  return () => ctrl.abort();
}

registerPage('models', { title: 'Models', needsScope: 'models:admin', mount });
