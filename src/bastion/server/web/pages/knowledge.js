// Knowledge page: upload documents (drag and drop or a file input) with a progress bar, list
// them, remove one. Data: POST /v1/ingest (text as content, PDFs and other binary files as
// content_base64), GET /v1/knowledge, DELETE /v1/knowledge/{id}.
import { registerPage } from '../app.js';
import { ApiError } from '../api.js';
import { el, append, replace, when, bytes, problem, statusLine, confirmDialog } from './dom.js';

const MAX_BYTES = 25 * 1024 * 1024; // the API's limit per request
const BINARY = /\.(pdf|docx?|odt|epub|rtf|xlsx?|pptx?|gz|zip)$/i;
const ACCEPT = '.pdf,.md,.markdown,.txt,.rst,.html,.htm,.py,.js,.ts,.go,.rs,.java,.c,.h,.cpp,.rb,.sh,.json,.yaml,.yml,.toml,.csv';

function base64(buffer) {
  const bytesArr = new Uint8Array(buffer);
  let bin = '';
  for (let i = 0; i < bytesArr.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytesArr.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

async function asDocument(file) {
  if (BINARY.test(file.name)) {
    return { name: file.name, content_base64: base64(await file.arrayBuffer()) };
  }
  return { name: file.name, content: await file.text() };
}

/** POST JSON with upload progress (fetch has none): onProgress(sentBytes, totalBytes). The
 * browser sends the sign-in cookie and this page's Origin, as it does for api(). */
function postWithProgress(path, body, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Content-Type', 'application/json');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) onProgress(ev.loaded, ev.total); };
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) { resolve(data); return; }
      const err = (data && data.error) || {};
      reject(new ApiError(xhr.status, err.message || `HTTP ${xhr.status}`, err.fix, err.code));
    };
    xhr.onerror = () => reject(new ApiError(0, 'the upload failed (network error)', 'try again'));
    xhr.onabort = () => reject(new ApiError(0, 'the upload was cancelled', ''));
    if (signal) signal.addEventListener('abort', () => xhr.abort());
    xhr.send(JSON.stringify(body));
  });
}

function mount(root, ctx) {
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  const status = statusLine('Upload status');
  const bar = el('progress', { max: 1, value: 0, 'aria-label': 'Upload progress', hidden: true });
  const list = el('ul', { class: 'page-list', 'aria-label': 'Documents' });
  const input = el('input', { type: 'file', id: 'knowledge-files', multiple: true, accept: ACCEPT,
    'aria-label': 'Choose files to upload' });
  const say = (msg) => { status.textContent = msg; };

  async function load() {
    try {
      const body = await ctx.api('/v1/knowledge', { signal });
      const docs = body.data || [];
      replace(list, docs.length ? docs.map(row) : el('li', {}, 'No documents yet.'));
    } catch (err) {
      if (!signal.aborted) say(problem(err));
    }
  }

  function row(d) {
    return el('li', { class: 'page-item' },
      el('span', { class: 'page-name' }, d.source), ' ',
      el('span', { class: 'page-meta' },
        `${d.kind}, ${d.chunks} chunks, ${bytes(d.size)}, added ${when(d.ingested_at)}`),
      el('div', { class: 'page-actions' },
        el('button', { type: 'button', class: 'danger', 'aria-label': `Remove ${d.source}`,
          onclick: () => remove(d) }, 'Remove')));
  }

  async function remove(d) {
    if (!(await confirmDialog(root, `Remove ${d.source} from the knowledge base?`, 'Remove'))) return;
    try {
      await ctx.api(`/v1/knowledge/${encodeURIComponent(d.id)}`, { method: 'DELETE', signal });
      say(`Removed ${d.source}.`);
      await load();
    } catch (err) {
      say(problem(err));
    }
  }

  async function upload(files) {
    files = Array.from(files || []);
    if (!files.length) return;
    const big = files.find((f) => f.size > MAX_BYTES);
    if (big) {
      say(`${big.name} is larger than 25 MiB (fix: split it, or ingest it with: bastion ingest FILE)`);
      return;
    }
    const total = files.reduce((n, f) => n + (f.size || 1), 0);
    let done = 0;
    bar.hidden = false;
    bar.max = total;
    bar.value = 0;
    const outcome = [];
    for (const file of files) {
      say(`Uploading ${file.name}...`);
      const size = file.size || 1;
      try {
        const doc = await asDocument(file);
        const body = await postWithProgress('/v1/ingest', { documents: [doc] }, (sent, all) => {
          bar.value = done + size * Math.min(1, sent / all);
        }, signal);
        for (const f of (body && body.data) || []) {
          outcome.push(`${f.source}: ${f.status}${f.detail ? ` (${f.detail})` : ''}`);
        }
      } catch (err) {
        if (signal.aborted) return;
        outcome.push(`${file.name}: ${problem(err)}`);
      }
      done += size;
      bar.value = done;
    }
    say(`Uploaded. ${outcome.join('; ')}`);
    input.value = '';
    await load();
  }

  const zone = el('div', { class: 'page-dropzone', role: 'group',
    'aria-label': 'Drop files here to upload them' },
    el('p', {}, 'Drop PDF, Markdown, HTML or code files here, or '),
    el('label', { for: 'knowledge-files', class: 'page-button' }, 'choose files'), ' ', input);
  zone.addEventListener('dragover', (ev) => { ev.preventDefault(); zone.classList.add('drag'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('drag'));
  zone.addEventListener('drop', (ev) => {
    ev.preventDefault();
    zone.classList.remove('drag');
    upload(ev.dataTransfer ? ev.dataTransfer.files : []);
  });
  input.addEventListener('change', () => upload(input.files));
  append(root, [el('h1', { id: 'page-title' }, 'Knowledge'), zone, bar, status, el('h2', {}, 'Documents'), list]);
  load();
  return () => ctrl.abort();
}

registerPage('knowledge', { title: 'Knowledge', needsScope: 'sessions:read', mount });
