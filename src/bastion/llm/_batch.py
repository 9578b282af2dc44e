"""Several sequences decoded together in one llama.cpp context (continuous batching).

The model worker (:mod:`bastion.llm._worker`) holds one context with ``n_seq_max = slots``
and one KV cache stream per sequence, as ``llama-server --parallel`` does. Every request runs
on the sequence its lease owns, as a job: a generator that says which tokens its sequence must
hold next (:class:`Sync`) and is resumed with their logits. One scheduler thread builds each
``llama_decode`` batch from all active jobs:

- a step is either one prompt chunk or the next token of every generating sequence, never
  both (with a KV cache per sequence llama.cpp would split such a batch into an extra
  micro-batch);
- prompts are evaluated in chunks of at most :data:`PREFILL_CHUNK` tokens, one prompt per
  step, the one with the fewest tokens left first (on a CPU a step costs in proportion to its
  tokens: two prompts one after the other give the first its first token in half the time two
  at once would), so a short new prompt does not wait behind a long one;
- prompt steps go first, but once a generating sequence has waited :data:`GEN_WAIT_S` for its
  next token, the generating sequences get a step before the next chunk: a long prompt
  pauses the others' answers by about one chunk's compute at a time, never by the whole
  prompt;
- each sequence keeps its KV cache between requests, so the constrained protocol's
  choose/fill/answer calls on one lease reuse their shared prompt prefix.

Sampling is per sequence in llama.cpp's sampler chains (grammar, then greedy or
top-k/top-p/min-p/temperature/seeded dist, llama-cpp-python's defaults), so a grammar-
constrained fill and a free answer run side by side in one batch. Scoring (the tool choice)
asks for the logits of every option token in one evaluation.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import math
import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.errors import BastionError, ModelError

PREFILL_CHUNK = 256  # prompt tokens one sequence adds to one decode step
# Prompt chunks go first, but a generating sequence that has waited this long for its next
# token gets it before the next chunk (a pause a reader barely notices)
GEN_WAIT_S = 0.1
N_BATCH = 512  # tokens one decode step can hold: one prompt chunk, or a token per slot

Send = Callable[[dict[str, Any]], None]


@dataclass
class Sync:
    """Make the sequence hold exactly ``tokens``; logits wanted from index ``logits_from`` on.

    ``rows``: copy every wanted position's logits (scoring); else the job is resumed with the
    batch index of the last token, still valid for ``llama_sampler_sample``.
    """

    tokens: list[int]
    logits_from: int
    rows: bool = False


@dataclass
class Logits:
    """What a job is resumed with after its :class:`Sync` was evaluated."""

    idx: int
    rows: list[Any] = field(default_factory=list)


Job = Generator[Sync, Logits, None]


@dataclass
class _Active:
    rid: int
    seq: int
    job: Job
    cancel: threading.Event
    want: Sync | None = None
    pending: list[int] = field(default_factory=list)
    pos: int = 0  # position of pending[0]
    rows: list[Any] = field(default_factory=list)
    since: float = 0.0  # when ``pending`` was set (time.monotonic): how long it has waited


class BatchEngine:
    """One llama.cpp context serving ``slots`` sequences; jobs are decoded together."""

    def __init__(self, eng: Any, slots: int, send: Send,
                 threads: Callable[[bool], int] | None = None,
                 busy: Callable[[bool], None] | None = None,
                 done: Callable[[], None] | None = None, *,
                 later: Send | None = None,
                 flush: Callable[..., None] | None = None,
                 on_threads: Callable[[int], None] | None = None) -> None:
        """Wrap ``eng``, an engine whose context has ``n_seq_max >= slots``.

        ``send`` writes one protocol message (from the scheduler thread). ``threads(prompt)``
        says how many threads the next step runs on (a step with a prompt chunk or not;
        default: the context's own ``n_threads_batch``/``n_threads``) and takes the cores it
        runs on, ``done()`` gives them back after the step; ``busy(flag)`` is told when this
        engine gets work and when it goes idle (:mod:`bastion.llm._threads`).
        ``later`` may hold a message (a text piece after a request's first) that ``flush()``
        writes once it is old enough and ``flush(all_held=True)`` at once (before a step with
        a prompt chunk, which can take long); default: every message goes out at once.
        ``on_threads(n)`` is told, before the step, each time a step's thread count changes
        (:meth:`bastion.llm.kernels.Choice.apply`: which kernel takes small batches).
        """
        from llama_cpp import llama_cpp as C

        if not 1 <= slots <= N_BATCH:  # a step holds one token per slot
            raise ValueError(f"a batch engine serves 1 to {N_BATCH} sequences, not {slots}")
        self.C = C
        self.eng = eng
        self.slots = slots
        self.send = send
        self.later = later or send
        self._flush = flush or (lambda all_held=False: None)
        llm = eng.llm
        self.ctx = llm._ctx.ctx
        self.mem = C.llama_get_memory(self.ctx)
        self.vocab = llm._model.vocab
        self.n_vocab = int(llm.n_vocab())
        self.n_ctx_seq = int(llm.n_ctx()) // slots
        self.batch = C.llama_batch_init(N_BATCH, 0, 1)
        self.cache: list[list[int]] = [[] for _ in range(slots)]
        self.inbox: queue.Queue[tuple[dict[str, Any], threading.Event] | None] = queue.Queue()
        self.active: collections.deque[_Active] = collections.deque()
        self.decodes = 0  # progress counter for the heartbeat
        self.serving: list[int] = []  # request ids in flight (read by the heartbeat)
        self.cancels: dict[int, threading.Event] = {}
        self._piece = ctypes.create_string_buffer(256)
        fixed = {True: int(llm.n_threads_batch), False: int(llm.n_threads)}
        self.threads: Callable[[bool], int] = threads or fixed.__getitem__
        self._busy = busy or (lambda flag: None)
        self._done = done or (lambda: None)
        self._threads_now = -1
        self._on_threads = on_threads or (lambda n: None)

    # -- jobs ------------------------------------------------------------------------------
    def _sampler(self, temperature: float, seed: int | None, grammar: Any) -> Any:
        C = self.C
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        if grammar is not None:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_grammar(
                self.vocab, grammar._grammar.encode("utf-8"), b"root"))
        if temperature <= 0:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
        else:
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_k(40))
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_p(0.95, 1))
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_min_p(0.05, 1))
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_temp(temperature))
            C.llama_sampler_chain_add(chain, C.llama_sampler_init_dist(
                C.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF))
        return chain

    def _piece_bytes(self, tok: int) -> bytes:
        n = self.C.llama_token_to_piece(self.vocab, tok, self._piece, 256, 0, False)
        return self._piece.raw[:n] if n > 0 else b""

    def _gen(self, req: dict[str, Any], cancel: threading.Event) -> Job:
        eng, C = self.eng, self.C
        rid = req["id"]
        # when the first piece goes out it carries this request's timeline (perf_counter,
        # CLOCK_MONOTONIC: comparable across processes): received, started, prompt tokenised,
        # prompt evaluated, sent; the benchmark splits the worker's first-token cost with it
        times = [float(req.get("_received", 0.0)), time.perf_counter()]
        toks = eng.tokens(eng.render(req["messages"], req.get("prefix", "")))
        times.append(time.perf_counter())
        if len(toks) >= self.n_ctx_seq:
            raise ModelError(
                f"the prompt has {len(toks)} tokens, more than the context ({self.n_ctx_seq})",
                fix="raise model.n_ctx or start a new session",
            )
        prompt_n = len(toks)
        max_tokens = max(1, min(int(req["max_tokens"]), self.n_ctx_seq - prompt_n))
        schema = req.get("schema")
        grammar = eng.grammar(schema) if schema is not None else None
        stops = [s for s in (req.get("stop") or ()) if s]
        hold = max((len(s) for s in stops), default=1) - 1
        smpl = self._sampler(float(req["temperature"]), req.get("seed"), grammar)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        text = ""
        sent = 0
        reason = "length"
        try:
            got = yield Sync(toks, len(toks) - 1)
            times.append(time.perf_counter())
            prompt_threads = self._threads_now  # the step that evaluated the prompt's end
            for n in range(1, max_tokens + 1):
                tok = int(C.llama_sampler_sample(smpl, self.ctx, got.idx))
                if C.llama_vocab_is_eog(self.vocab, tok):
                    reason = "stop"
                    break
                text += decoder.decode(self._piece_bytes(tok))
                cut = min((i for s in stops if (i := text.find(s, max(0, sent - hold))) >= 0),
                          default=-1)
                if cut >= 0:
                    text = text[:cut]
                    reason = "stop"
                    break
                safe = len(text) - self._held(text, stops)
                if safe > sent:
                    if not sent:
                        self.send({"id": rid, "t": text[:safe],
                                   "ts": [*times, time.perf_counter()], "nt": prompt_threads})
                    else:
                        self.later({"id": rid, "t": text[sent:safe]})
                    sent = safe
                if cancel.is_set():
                    reason = "cancelled"
                    break
                if n == max_tokens:
                    break
                toks.append(tok)
                got = yield Sync(toks, len(toks) - 1)
            if len(text) > sent:
                self.send({"id": rid, "t": text[sent:]})
            self.send({"id": rid, "usage": [prompt_n, eng.count(text) if text else 0]})
            self.send({"id": rid, "finish": reason})
        finally:
            C.llama_sampler_free(smpl)

    @staticmethod
    def _held(text: str, stops: Sequence[str]) -> int:
        """How many trailing characters could still begin a stop string (held back)."""
        best = 0
        for s in stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best

    def _score(self, req: dict[str, Any], cancel: threading.Event) -> Job:
        import numpy as np

        eng = self.eng
        base_text = eng.render(req["messages"], req.get("prefix", ""))
        base = eng.tokens(base_text)
        out: list[float] = []
        for opt in req["options"]:
            full = eng.tokens(base_text + opt)
            k = 0
            while k < min(len(base), len(full)) and base[k] == full[k]:
                k += 1
            k = max(k, 1)
            cont = [*full[k:], eng.end_token]
            target = full[:k] + cont[:-1]
            if len(target) >= self.n_ctx_seq:
                raise ModelError(
                    f"the prompt has {len(target)} tokens, more than the context "
                    f"({self.n_ctx_seq})", fix="raise model.n_ctx or start a new session")
            got = yield Sync(target, k - 1, rows=True)
            total = 0.0
            for row, tok in zip(got.rows, cont, strict=True):
                m = float(row.max())
                total += float(row[tok]) - (m + math.log(float(np.exp(row - m).sum())))
            out.append(total)
            if cancel.is_set():
                break
        self.send({"id": req["id"], "scores": out})

    # -- the scheduler -----------------------------------------------------------------------
    def submit(self, req: dict[str, Any]) -> None:
        """Queue a request (any thread); its receipt time goes with it."""
        req["_received"] = time.perf_counter()
        cancel = self.cancels[int(req["id"])] = threading.Event()
        self.inbox.put((req, cancel))

    def cancel(self, rid: int) -> None:
        """Stop request ``rid`` at its next step (any thread; unknown ids are ignored)."""
        ev = self.cancels.get(rid)
        if ev is not None:
            ev.set()

    def stop(self) -> None:
        """Finish the jobs in hand, then return from :meth:`run`."""
        self.inbox.put(None)

    def _start(self, req: dict[str, Any], cancel: threading.Event) -> None:
        seq = int(req.get("seq", 0))
        if not 0 <= seq < self.slots:
            self.cancels.pop(int(req["id"]), None)
            self.send({"id": req["id"], "error": f"no sequence {seq} in this worker",
                       "fix": None, "end": True})
            return
        for old in [a for a in self.active if a.seq == seq]:
            # A lease is exclusive, so the job still on this sequence belongs to a caller
            # that left without waiting for its end (its cancel may not even be sent yet).
            # End it now: two jobs decoding one sequence corrupt its KV cache.
            old.cancel.set()
            self._end(old, None)
        make = self._score if req["op"] == "score" else self._gen
        a = _Active(req["id"], seq, make(req, cancel), cancel)
        self.active.append(a)
        self.serving.append(a.rid)
        self._advance(a, None)

    def _end(self, a: _Active, error: BaseException | None) -> None:
        a.job.close()
        self.cancels.pop(a.rid, None)
        if a in self.active:
            self.active.remove(a)
        if a.rid in self.serving:
            self.serving.remove(a.rid)
        if error is None:
            self.send({"id": a.rid, "end": True})
            return
        self.C.llama_memory_seq_rm(self.mem, a.seq, 0, -1)  # its KV state is unknown now
        self.cache[a.seq] = []
        if isinstance(error, BastionError):
            self.send({"id": a.rid, "error": error.message, "fix": error.fix, "end": True})
        else:
            self.send({"id": a.rid, "error": f"{type(error).__name__}: {error}", "fix": None,
                       "end": True})

    def _advance(self, a: _Active, got: Logits | None) -> None:
        """Resume ``a``'s job; plan what its sequence must evaluate next."""
        try:
            want = next(a.job) if got is None else a.job.send(got)
        except StopIteration:
            self._end(a, None)
            return
        except Exception as exc:  # noqa: BLE001 - a Python-level failure is this request's error
            self._end(a, exc)
            return
        cache = self.cache[a.seq]
        toks = want.tokens
        limit = min(len(cache), want.logits_from)
        if a.want is not None and toks is a.want.tokens and len(cache) == len(toks) - 1:
            common = len(cache)  # the usual step: the job appended its sampled token
        else:
            common = 0
            while common < limit and cache[common] == toks[common]:
                common += 1
        if common < len(cache):
            self.C.llama_memory_seq_rm(self.mem, a.seq, common, -1)
            del cache[common:]
        a.want, a.pending, a.pos, a.rows = want, toks[common:], common, []
        a.since = time.monotonic()

    def _fill(self) -> list[tuple[_Active, int, int]]:
        """Build the next batch: one prompt chunk, or every generating sequence's token."""
        b = self.batch
        n = 0
        plan: list[tuple[_Active, int, int]] = []  # (job, first batch index, count)
        # ONE prompt chunk alone, the prompt with the fewest tokens left (a prompt step costs
        # in proportion to its tokens on a CPU, so prompts evaluated one after another give
        # earlier first tokens than all at once), unless a generating sequence has waited
        # GEN_WAIT_S for its next token: then every generating sequence's next token. Not
        # both in one batch: with a KV cache per sequence llama.cpp splits a batch into
        # micro-batches of equal tokens per sequence, so one generated token beside a
        # 15-token prompt cost a micro-batch of its own (1 thread: 42.7 ms, against 26.5 ms
        # for the prompt alone and 11.3 ms for the token alone)
        prompts = [a for a in self.active if len(a.pending) > 1]
        order = [a for a in self.active if len(a.pending) == 1]
        now = time.monotonic()
        if prompts and not any(now - a.since >= GEN_WAIT_S for a in order):
            order = [min(prompts, key=lambda a: len(a.pending))]
        # in sequence order: llama.cpp splits a batch whose sequences come out of order into
        # one micro-batch per sequence, and a one-token matmul cannot use the batched kernel
        # (measured: a 2-sequence step 47 ms instead of 40, a third of it in per-row dots)
        order.sort(key=lambda a: a.seq)
        for a in order:  # (at most PREFILL_CHUNK or one token per slot: within N_BATCH)
            take = min(len(a.pending), PREFILL_CHUNK)
            lf = a.want.logits_from if a.want is not None else 0
            for j in range(take):
                pos = a.pos + j
                b.token[n + j] = a.pending[j]
                b.pos[n + j] = pos
                b.n_seq_id[n + j] = 1
                b.seq_id[n + j][0] = a.seq
                b.logits[n + j] = pos >= lf
            plan.append((a, n, take))
            n += take
        b.n_tokens = n
        return plan

    def _step(self) -> None:
        import numpy as np

        C = self.C
        for a in [a for a in self.active if a.cancel.is_set() and len(a.pending) > 1]:
            self._end(a, None)  # a cancelled prompt: stop evaluating it
        plan = self._fill()
        if not plan:
            return
        # Generation steps (one token per sequence) run on the generation threads, steps with
        # a prompt chunk on the prompt threads. Both follow the workers busy at this moment
        # (the cores are shared among those), and a pool's worker runs on the cores it holds
        # for this step (spinning threads over another worker's cores cost 20-60x).
        prompt_step = any(c > 1 for _, _, c in plan)
        # text held back goes out now if it is old enough, or before a step that evaluates
        # a prompt chunk (one such step can take as long as many generated tokens)
        self._flush(all_held=prompt_step)
        threads = self.threads(prompt_step)
        try:
            if threads != self._threads_now:
                C.llama_set_n_threads(self.ctx, threads, threads)
                self._on_threads(threads)
                self._threads_now = threads
            rc = int(C.llama_decode(self.ctx, self.batch))
        finally:
            self._done()
        self.decodes += 1
        if rc != 0:
            err = ModelError(f"llama_decode failed ({rc}): the context is full",
                             fix="raise model.n_ctx or use fewer model.slots")
            for a, _, _ in plan:
                self._end(a, err)
            return
        self.active.rotate(-1)  # round-robin: of prompts equally short, another goes first
        for a, first, count in plan:
            want = a.want
            assert want is not None
            self.cache[a.seq].extend(a.pending[:count])
            if want.rows:
                for j in range(count):
                    if a.pos + j >= want.logits_from:
                        ptr = C.llama_get_logits_ith(self.ctx, first + j)
                        a.rows.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
            a.pending = a.pending[count:]
            a.pos += count
            if not a.pending:
                self._advance(a, Logits(first + count - 1, a.rows))

    def run(self) -> None:
        """Serve until :meth:`stop`: take new requests, decode one batch, repeat."""
        stopping = False
        busy = False
        while True:
            while True:
                if busy and not self.active:
                    busy = False
                    self._busy(False)  # idle: the other workers may use our cores
                try:
                    item = self.inbox.get(block=not self.active and not stopping)
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                self._start(*item)
            if stopping and not self.active:
                return
            if self.active and not busy:
                busy = True
                self._busy(True)
            self._step()
