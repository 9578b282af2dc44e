"""The factory for leaf models: configuration in, an embedded, worker or HTTP :class:`Model` out.

Composite models (``cluster``, ``pattern``) sit in higher layers and are built by the composition
level, :func:`bastion.models.create_model`, which calls down into :func:`create_leaf_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.config.backends import COMPOSITE_MODEL_BACKENDS, LEAF_MODEL_BACKENDS, load_object
from bastion.config.model import Config
from bastion.errors import ModelError
from bastion.llm.base import Model

if TYPE_CHECKING:
    from bastion.llm.convert import Choice
    from bastion.llm.footprint import Plan

# Names the embedded backend knows without a path (each maps to a shipped package).
EMBEDDED_NAMES = {"smollm2-135m", "smollm2", "SmolLM2-135M-Instruct"}


def _embedded_path(config: Config) -> Path | None:
    mc = config.model
    if mc.path is not None:
        path = Path(mc.path).expanduser()
        if not path.is_file():
            raise ModelError(
                f"model file not found: {path}",
                fix="set model.path to an existing .gguf file, or unset it for the shipped model",
            )
        if path.suffix.lower() != ".gguf":
            raise ModelError(
                f"model file {path.name} is not a GGUF file",
                fix="point model.path at a .gguf model (llama.cpp format)",
            )
        from bastion.llm import store

        manifest = store.manifest_for(path)
        if manifest is not None:  # a pulled/imported model: refuse it if it changed
            store.check_unchanged(manifest)
        return path
    if mc.name not in EMBEDDED_NAMES:
        raise ModelError(
            f"unknown embedded model {mc.name!r}",
            fix=f"set model.name to smollm2-135m, or set model.path to a .gguf file "
            f"(known: {', '.join(sorted(EMBEDDED_NAMES))})",
        )
    return None


def provenance(config: Config) -> dict[str, Any]:
    """Say which exact weights answer: the GGUF's SHA-256, or the remote server and model id.

    Recorded in every ``model.request`` audit record (``detail.provenance``).
    """
    mc = config.model
    if mc.backend == "embedded":
        from bastion.llm import store
        from bastion.llm.embedded import shipped_model_path

        path = _embedded_path(config) or shipped_model_path()
        try:
            sha: str | None = store.identify(path)
        except OSError:
            sha = None
        out: dict[str, Any] = {"backend": "embedded", "sha256": sha, "file": path.name,
                               "model": mc.name}
        if sha is not None and mc.convert != "off":
            from bastion.llm.convert import cached_copy

            copy = cached_copy(sha)
            if copy is not None:  # the weights that answer are its Q8_0 conversion
                out["converted"] = {"type": copy["type"], "sha256": copy["sha256"]}
        return out
    if mc.backend in ("openai", "ollama"):
        return {"backend": mc.backend, "base_url": mc.base_url, "model": mc.name}
    return {"backend": mc.backend, "model": mc.name}


def repack_setting(config: Config) -> bool | None:
    """``model.repack`` as the loaders take it: True/False, or None for their default."""
    return {"auto": None, "on": True, "off": False}[config.model.repack]


def planned(config: Config, path: Path) -> tuple[Choice, Plan, bool]:
    """Ready ``path`` and plan its memory as :func:`embedded_model` loads it; nothing starts.

    Returns the file to load (the source, or its Q8_0 copy), the memory plan
    (:mod:`bastion.llm.footprint`; a setting that cannot fit raises ``ContextTooLarge``) and
    the repack choice. The in-process model loads from it; ``bastion doctor`` shows it; the
    worker pool makes the same plan in ``WorkerModel.load``.
    """
    from bastion.llm.embedded import repack_default
    from bastion.llm.repack import amx_kernels
    from bastion.llm.source import prepare_source
    from bastion.llm.worker import plan_memory

    mc = config.model
    repack = repack_setting(config)
    repack = repack_default() if repack is None else repack
    vocab, choice = prepare_source(path, mode=mc.convert, n_gpu_layers=mc.n_gpu_layers,
                                   repack=repack, amx=amx_kernels(repack))
    one = mc.isolation == "in_process"
    fit = plan_memory(vocab, choice.path, n_ctx=mc.n_ctx, slots=1 if one else mc.slots,
                      workers=1 if one else mc.workers, repack=repack,
                      n_gpu_layers=mc.n_gpu_layers)
    return choice, fit, repack


def embedded_model(config: Config) -> Model:
    """Build the embedded GGUF model (worker processes, or in this process)."""
    mc = config.model
    if mc.isolation == "in_process":
        from bastion.llm.embedded import EmbeddedModel, load_llama, shipped_model_path

        choice, fit, repack = planned(config, _embedded_path(config) or shipped_model_path())
        llama = load_llama(choice.path, n_ctx=fit.n_ctx, n_threads=mc.n_threads,
                           n_gpu_layers=mc.n_gpu_layers, repack=repack)
        model = EmbeddedModel(llama, name=mc.name)
        model.memory = fit
        return model
    from bastion.llm.worker import WorkerModel

    return WorkerModel.load(
        _embedded_path(config),
        name=mc.name,
        n_ctx=mc.n_ctx,
        n_threads=mc.n_threads,
        n_gpu_layers=mc.n_gpu_layers,
        slots=mc.slots,
        workers=mc.workers,
        repack=repack_setting(config),
        stall_timeout_s=mc.stall_timeout_s,
        convert=mc.convert,
    )


def http_model(config: Config) -> Model:
    """Build the client of an OpenAI-compatible or Ollama server."""
    from bastion.llm.http import HttpModel, pick_profile

    mc = config.model
    quirks = pick_profile(mc.backend, mc.base_url, mc.profile)
    key = mc.api_key.get_secret_value() if mc.api_key is not None else None
    if quirks.needs_key and not key:
        raise ModelError(
            f"the {quirks.name} backend needs an API key",
            fix="bastion config set model.api_key KEY (or use a local model.base_url)",
        )
    return HttpModel(
        mc.name,
        quirks=quirks,
        base_url=mc.base_url,
        api_key=key,
        timeout_s=mc.timeout_s,
        native_tools=mc.native_tools,
    )


def leaf_builder(backend: str) -> Callable[[Config], Model] | None:
    """Return the builder of a built-in leaf backend (``config.backends``), or None."""
    target = LEAF_MODEL_BACKENDS.get(backend)
    if target is None:
        return None
    build = load_object(target)
    if not callable(build):
        raise ModelError(f"model backend {backend!r} ({target}) is not callable",
                         fix="point its line in bastion.config.backends at (config) -> Model")
    return build


def create_leaf_model(config: Config) -> Model:
    """Build the leaf model ``config.model`` describes (embedded, openai, ollama, ...)."""
    backend = config.model.backend
    build = leaf_builder(backend)
    if build is not None:
        return build(config)
    if backend in COMPOSITE_MODEL_BACKENDS:
        raise ModelError(
            f"model.backend {backend!r} is a composite model, not a leaf backend",
            fix="build it with bastion.models.create_model(config)",
        )
    raise ModelError(
        f"unknown model backend {backend!r}",
        fix=f"set model.backend to one of {', '.join(LEAF_MODEL_BACKENDS)} (or build a plugin "
            "backend with bastion.models.create_model)",
    )
