"""What an embedded model's workers will take in memory, decided before any of them loads.

llama.cpp allocates each context's KV cache in full when the context is made: ``n_ctx`` tokens
for each of the ``slots`` conversations, ``layers x KV heads x (key + value dims) x 2 bytes``
per token (f16). A setting that does not fit either fails inside llama.cpp ("Failed to create
llama_context") or gets the worker killed by the kernel's out-of-memory killer, after which a
retry does the same. So the plan is made from the file's own metadata first (:func:`plan`):

- ``model.n_ctx`` above the context the model was trained on is lowered to it (as Ollama does):
  past it answers degrade, and the cache would only take memory;
- the KV cache, the model (one copy per worker where weights are repacked, one shared mapping
  otherwise) and each worker's own runtime must fit in :func:`bastion.hardware.memory.room`;
  with ``model.slots`` unset, fewer conversations are served at once until they fit; otherwise
  (or when one conversation does not fit) :class:`ContextTooLarge` names the numbers and the
  largest ``model.n_ctx`` that fits.

Architectures whose cache is not that plain product (sliding-window attention, recurrent
state, compressed MLA caches) and layers offloaded to a GPU are not estimated: the plan only
lowers the context there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bastion.errors import ModelError
from bastion.hardware.memory import Room, gib

WORKER_RUNTIME = 128 * 2**20  # a worker's Python, llama.cpp's buffers (measured ~100 MiB)
KV_BYTES = 2  # f16 keys and values (llama.cpp's default cache type)
MIN_CTX = 256
# how the fix names each setting (``{}``: the value that fits); node serve names its flags
CONFIG_SET = {"slots": "`bastion config set model.slots {}`",
              "n_ctx": "`bastion config set model.n_ctx {}`"}
# metadata keys that mean the cache is not n_ctx x layers x heads x dims
_NOT_PLAIN = ("attention.sliding_window", "attention.kv_lora_rank", "ssm.state_size",
              "rwkv.head_size", "wkv.head_size")


@dataclass(frozen=True)
class Shape:
    """The numbers of a GGUF that decide its memory (from its metadata)."""

    arch: str
    trained_ctx: int | None  # ``<arch>.context_length``
    kv_per_token: int | None  # bytes per token of one sequence; None: not estimated

    @classmethod
    def of(cls, meta: Mapping[str, str]) -> Shape:
        """Read the shape from llama-cpp-python's ``Llama.metadata`` (strings)."""
        arch = meta.get("general.architecture", "")

        def num(key: str) -> int | None:
            value = meta.get(f"{arch}.{key}", "")
            return int(value) if value.isdigit() else None

        layers, heads, kv_heads = num("block_count"), num("attention.head_count"), \
            num("attention.head_count_kv")
        embd = num("embedding_length")
        kv_heads = kv_heads or heads
        head_dim = embd // heads if embd and heads else None
        k_dim = num("attention.key_length") or head_dim
        v_dim = num("attention.value_length") or head_dim
        per_token = None
        if layers and kv_heads and k_dim and v_dim and not any(
                f"{arch}.{key}" in meta for key in _NOT_PLAIN):
            per_token = layers * kv_heads * (k_dim + v_dim) * KV_BYTES
        return cls(arch, num("context_length"), per_token)


class ContextTooLarge(ModelError):
    """The model's context and conversations at once need more memory than this machine has."""


@dataclass(frozen=True)
class Note:
    """Something the plan changed or found, and what would change it."""

    text: str
    fix: str


@dataclass(frozen=True)
class Plan:
    """What the workers load: the context and conversations that fit, and what they take."""

    n_ctx: int
    slots: int
    workers: int
    kv_bytes: int | None = None  # all workers' KV caches together; None: not estimated
    model_bytes: int = 0  # the model's resident copies
    room: Room | None = None
    notes: tuple[Note, ...] = field(default=())

    def describe(self) -> str:
        """One line for `bastion doctor`."""
        head = f"context {self.n_ctx} tokens x {self.slots} conversation(s) at once on " \
            f"{self.workers} worker(s)"
        if self.kv_bytes is None:
            body = "; KV cache not estimated for this model"
        else:
            body = f": KV cache {gib(self.kv_bytes)} + model {gib(self.model_bytes)}"
            if self.room is not None:
                body += f", {self.room.describe()}"
        return head + body + "".join(f"; {n.text}" for n in self.notes)


def plan(
    shape: Shape,
    *,
    n_ctx: int,
    slots: int | None,
    auto_slots: int,
    model_bytes: int,
    repack: bool,
    workers: int | None,
    auto_workers: Callable[[int], int],
    room: Room | None,
    gpu_layers: int = 0,
    settings: Mapping[str, str] = CONFIG_SET,
    notes: Sequence[Note] = (),
) -> Plan:
    """Decide the context and conversations the workers get; raise when they cannot fit.

    ``slots`` is ``model.slots`` (None: ``auto_slots``, lowered until it fits); ``workers`` is
    ``model.workers`` (None: ``auto_workers(slots)``). ``model_bytes`` is the file's size:
    resident once per worker when ``repack`` (each holds its own repacked weights), once in all
    otherwise (the file is mapped and its pages shared). ``settings`` says how a fix names
    ``slots`` and ``n_ctx`` (a command with ``{}`` for the value; a setting left out is not
    offered). ``notes`` (the caller's findings) come first in the plan's.
    """
    found = list(notes)
    if shape.trained_ctx and n_ctx > shape.trained_ctx:
        found.append(Note(f"a {n_ctx}-token context is above the {shape.trained_ctx} tokens "
                          f"this model was trained on: using {shape.trained_ctx}",
                          settings.get("n_ctx", "{}").format(shape.trained_ctx)))
        n_ctx = shape.trained_ctx
    want = slots or auto_slots

    def workers_for(s: int) -> int:
        return max(1, min(s, workers or auto_workers(s)))

    def need(s: int, ctx: int) -> tuple[int, int, int]:
        w = workers_for(s)
        kv = s * ctx * (shape.kv_per_token or 0)
        model = model_bytes * (w if repack else 1)
        return kv, model, kv + model + w * WORKER_RUNTIME

    if shape.kv_per_token is None or room is None or gpu_layers:
        return Plan(n_ctx, want, workers_for(want), None, 0, room, tuple(found))
    s = want
    while s > 1 and need(s, n_ctx)[2] > room.bytes and slots is None:
        s -= 1
    kv, model, total = need(s, n_ctx)
    if total <= room.bytes:
        if s < want:
            found.append(Note(f"{s} conversation(s) at once, not {want}: {want} would need "
                              f"{gib(need(want, n_ctx)[2])}",
                              "free memory, or a shorter context ("
                              + settings.get("n_ctx", "{}").format("N") + ")"))
        return Plan(n_ctx, s, workers_for(s), kv, model, room, tuple(found))
    raise _too_large(shape, n_ctx, s, workers_for(s), kv, model, room, settings)


def _too_large(shape: Shape, n_ctx: int, slots: int, workers: int, kv: int, model: int,
               room: Room, settings: Mapping[str, str]) -> ContextTooLarge:
    per_token = shape.kv_per_token or 1
    fixed = model + workers * WORKER_RUNTIME
    what = (f"the local model needs {gib(kv + fixed)} for a {n_ctx}-token context x {slots} "
            f"conversation(s) at once (KV cache {gib(kv)}, {max(1, per_token // 1024)} KiB per "
            f"token per conversation; model {gib(model)}; {workers} worker(s)); "
            f"{room.describe()}")
    left = room.bytes - fixed
    fits_ctx = min(n_ctx - 1, left // (slots * per_token)) // MIN_CTX * MIN_CTX
    fits_slots = min(slots - 1, left // (n_ctx * per_token))
    ways = []
    if fits_slots >= 1 and "slots" in settings:
        ways.append(f"{settings['slots'].format(fits_slots)} (fewer conversations at once)")
    if fits_ctx >= MIN_CTX and "n_ctx" in settings:
        ways.append(f"{settings['n_ctx'].format(fits_ctx)} (a shorter context)")
    if ways:
        fix = " or ".join(ways) + ", or free memory"
    elif slots > 1 and "slots" in settings and \
            room.bytes - model - WORKER_RUNTIME >= MIN_CTX * per_token:
        fix = f"serve one conversation at a time ({settings['slots'].format(1)}) and a " \
              "shorter context"
    else:
        fix = ("this model does not fit in the memory left: use a smaller or more quantised "
               "model (model.path), or free memory")
    return ContextTooLarge(what, fix=fix)
