// Tasks page: the caller's unattended tasks (schedule, next fire, paused) with Run now and
// Pause/Resume, and their latest runs (status, reason, steps) with the signed receipt as a
// download. Data: GET /v1/tasks, POST /v1/tasks/NAME/{run,pause,resume}, GET /v1/runs,
// GET /v1/runs/ID/receipt. Tasks are added with `bastion task add` or POST /v1/tasks.
import { registerPage } from '../app.js';
import { el, append, replace, when, problem, statusLine, saveFile } from './dom.js';

function mount(root, ctx) {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const status = statusLine('Tasks status');
  const taskRows = el('tbody');
  const runRows = el('tbody');
  const say = (msg) => { status.textContent = msg; };
  let timer = null;

  async function act(task, verb) {
    try {
      const r = await ctx.api(`/v1/tasks/${encodeURIComponent(task.name)}/${verb}`,
        { method: 'POST', signal });
      say(verb === 'run' ? `Started run ${r.run_id} of ${task.name}.` : `${task.name}: ${verb}d.`);
      await load();
    } catch (err) {
      if (!signal.aborted) say(problem(err));
    }
  }

  async function receipt(run) {
    try {
      const r = await ctx.api(`/v1/runs/${encodeURIComponent(run.id)}/receipt`, { signal });
      saveFile(`receipt-${run.id}.json`, JSON.stringify(r, null, 2), 'application/json');
      say(`Saved the receipt of run ${run.id}; check it with: bastion run verify receipt-${run.id}.json`);
    } catch (err) {
      if (!signal.aborted) say(problem(err));
    }
  }

  function taskRow(t) {
    const paused = t.paused;
    return el('tr', {},
      el('td', {}, t.name),
      el('td', {}, `${t.schedule.kind} ${t.schedule.expr}`.trim()),
      el('td', {}, paused ? 'paused' : when(t.next_fire)),
      el('td', {}, t.prompt),
      el('td', {},
        el('button', { type: 'button', 'aria-label': `Run ${t.name} now`,
          onclick: () => act(t, 'run') }, 'Run now'),
        el('button', { type: 'button', 'aria-label': `${paused ? 'Resume' : 'Pause'} ${t.name}`,
          onclick: () => act(t, paused ? 'resume' : 'pause') }, paused ? 'Resume' : 'Pause')));
  }

  function runRow(r) {
    return el('tr', {},
      el('td', {}, r.id),
      el('td', {}, r.task),
      el('td', {}, r.status),
      el('td', {}, r.reason || ''),
      el('td', {}, when(r.created)),
      el('td', {}, String(r.steps)),
      el('td', {}, r.has_receipt
        ? el('button', { type: 'button', 'aria-label': `Save the receipt of run ${r.id}`,
          onclick: () => receipt(r) }, 'Receipt')
        : ''));
  }

  async function load() {
    try {
      const [tasks, runs] = await Promise.all([
        ctx.api('/v1/tasks', { signal }), ctx.api('/v1/runs?limit=20', { signal })]);
      replace(taskRows, (tasks.tasks || []).map(taskRow));
      replace(runRows, (runs.runs || []).map(runRow));
      if (!status.textContent) {
        say(`${tasks.tasks.length} task${tasks.tasks.length === 1 ? '' : 's'}.`);
      }
    } catch (err) {
      if (!signal.aborted) say(problem(err));
    }
  }

  const table = (label, heads, body) => el('div', { class: 'page-scroll' },
    el('table', { 'aria-label': label, class: 'page-table' },
      el('thead', {}, el('tr', {}, heads.map((h) => el('th', { scope: 'col' }, h)))), body));
  append(root, [
    el('h1', { id: 'page-title' }, 'Tasks'),
    el('p', { class: 'page-meta' }, 'Add tasks with: bastion task add NAME --every 1h "prompt"'),
    status,
    table('Tasks', ['Task', 'Schedule', 'Next', 'Prompt', ''], taskRows),
    el('h2', {}, 'Latest runs'),
    table('Runs', ['Run', 'Task', 'Status', 'Reason', 'Started', 'Steps', ''], runRows),
  ]);
  load();
  timer = setInterval(load, 2000); // runs move on their own: parked, done
  return () => { ctrl.abort(); clearInterval(timer); };
}

registerPage('tasks', { title: 'Tasks', needsScope: 'tasks', mount });
