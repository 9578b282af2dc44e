// Voice page: push-to-talk over WS /v1/voice/ws (16 kHz mono PCM up, the answer's text and
// spoken PCM down). Registered only when GET /v1/voice says the server can transcribe and
// speak, and the browser can record (getUserMedia needs a secure context: localhost or HTTPS).
import { registerPage } from '../app.js';
import { api } from '../api.js';
import { el, append, problem, statusLine } from './dom.js';

const RATE = 16000;

function toPcm16(floats) {
  const out = new Int16Array(floats.length);
  for (let i = 0; i < floats.length; i++) {
    const v = Math.max(-1, Math.min(1, floats[i]));
    out[i] = v < 0 ? v * 0x8000 : v * 0x7fff;
  }
  return out.buffer;
}

function mount(root) {
  const status = statusLine('Voice status');
  const heard = el('p', { 'aria-label': 'You said', class: 'page-snippet' });
  const answer = el('p', { 'aria-label': 'Answer', class: 'page-snippet', 'aria-live': 'polite' });
  const talk = el('button', { type: 'button', class: 'page-ptt', 'aria-pressed': 'false' },
    'Hold to talk (or hold Space)');
  const say = (msg) => { status.textContent = msg; };
  let ws = null;
  let mic = null; // {stream, ctx, node}
  let player = null;
  let playAt = 0;
  let nextAudio = null; // the header of the binary frame to come
  let sessionId = null;
  let started = false; // this connection's start was sent (the server answers it with ready)

  function connect() {
    return new Promise((resolve, reject) => {
      if (ws && ws.readyState === WebSocket.OPEN) { resolve(ws); return; }
      const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/voice/ws`;
      // The browser sends the sign-in cookie (and this page's Origin, which the server checks).
      ws = new WebSocket(url, ['bastion']);
      started = false;
      ws.binaryType = 'arraybuffer';
      ws.onmessage = (ev) => onMessage(ev.data, resolve);
      ws.onerror = () => reject(new Error('the voice connection failed'));
      ws.onclose = (ev) => { if (ev.code === 1008) say(`Refused: ${ev.reason || 'bad or missing key'}`); ws = null; };
    });
  }

  function onMessage(data, ready) {
    if (data instanceof ArrayBuffer) { play(data); return; }
    let msg;
    try { msg = JSON.parse(data); } catch (_) { return; }
    if (msg.type === 'ready') {
      // The first ready asks for our start; the next one confirms it. Answering that one
      // with another start would loop, and each start drops the audio received so far.
      if (started) return;
      started = true;
      sessionId = sessionId || msg.session_id;
      ws.send(JSON.stringify({ type: 'start', sample_rate: RATE, session_id: sessionId, vad: false, partials: true }));
      ready(ws);
    } else if (msg.type === 'partial' || msg.type === 'transcript') {
      heard.textContent = msg.text;
      if (msg.type === 'transcript') { answer.textContent = ''; say('Thinking...'); }
    } else if (msg.type === 'text') {
      answer.textContent += msg.text || msg.delta || '';
    } else if (msg.type === 'audio') {
      nextAudio = msg;
    } else if (msg.type === 'turn_end') {
      say(msg.error ? `The answer failed: ${msg.error}` : 'Done. Hold the button to talk again.');
    } else if (msg.type === 'error') {
      say(problem(msg));
    }
  }

  function play(buffer) {
    const header = nextAudio || { sample_rate: 22050 };
    nextAudio = null;
    player = player || new AudioContext();
    const pcm = new Int16Array(buffer);
    const audio = player.createBuffer(1, pcm.length, header.sample_rate);
    const ch = audio.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 0x8000;
    const src = player.createBufferSource();
    src.buffer = audio;
    src.connect(player.destination);
    playAt = Math.max(playAt, player.currentTime);
    src.start(playAt);
    playAt += audio.duration;
  }

  async function start() {
    if (mic) return;
    talk.setAttribute('aria-pressed', 'true');
    try {
      const socket = await connect();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
      const ctx = new AudioContext({ sampleRate: RATE });
      const source = ctx.createMediaStreamSource(stream);
      const node = ctx.createScriptProcessor(4096, 1, 1);
      node.onaudioprocess = (ev) => {
        if (socket.readyState === WebSocket.OPEN) socket.send(toPcm16(ev.inputBuffer.getChannelData(0)));
      };
      source.connect(node);
      node.connect(ctx.destination);
      mic = { stream, ctx, node };
      say('Listening... release to send.');
    } catch (err) {
      talk.setAttribute('aria-pressed', 'false');
      say(problem(err));
    }
  }

  function stop() {
    talk.setAttribute('aria-pressed', 'false');
    if (!mic) return;
    mic.node.disconnect();
    mic.stream.getTracks().forEach((t) => t.stop());
    mic.ctx.close();
    mic = null;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'end' }));
    say('Transcribing...');
  }

  talk.addEventListener('pointerdown', (ev) => { ev.preventDefault(); start(); });
  talk.addEventListener('pointerup', stop);
  talk.addEventListener('pointerleave', () => { if (mic) stop(); });
  talk.addEventListener('keydown', (ev) => {
    if ((ev.key === ' ' || ev.key === 'Enter') && !ev.repeat) { ev.preventDefault(); start(); }
  });
  talk.addEventListener('keyup', (ev) => {
    if (ev.key === ' ' || ev.key === 'Enter') { ev.preventDefault(); stop(); }
  });
  append(root, [el('h1', { id: 'page-title' }, 'Voice'), talk, status,
    el('h2', {}, 'You said'), heard, el('h2', {}, 'Answer'), answer]);
  return () => {
    if (mic) stop();
    if (ws) ws.close();
    if (player) player.close();
  };
}

/** Run ``fn`` once someone is signed in (the shell shows its "Signed in as" box then): the
 * page modules load before sign-in, and GET /v1/voice needs a signed-in user. */
function whenSignedIn(fn) {
  const who = document.getElementById('who');
  if (!who || !who.hidden) { fn(); return; }
  const watch = new MutationObserver(() => {
    if (!who.hidden) { watch.disconnect(); fn(); }
  });
  watch.observe(who, { attributes: true, attributeFilter: ['hidden'] });
}

function probe() {
  api('/v1/voice').then((s) => {
    if (s && s.available) registerPage('voice', { title: 'Voice', needsScope: 'chat', mount });
  }).catch((err) => {
    if (err && err.status === 401) whenSignedIn(probe); // signed out meanwhile: ask again later
  });
}

if (navigator.mediaDevices && typeof navigator.mediaDevices.getUserMedia === 'function' &&
    typeof WebSocket === 'function' && typeof AudioContext === 'function') {
  whenSignedIn(probe);
}
