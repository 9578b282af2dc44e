"""``bastion model pull|import|list|show|rm|use|verify``: GGUF models from the Hugging Face Hub.

Models live in ``<home>/models/<name>/`` with a manifest (see :mod:`bastion.llm.store`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.cli._options import JsonOpt
from bastion.errors import ModelError
from bastion.llm import store

if TYPE_CHECKING:
    from bastion.hardware import Recommendation

model_app = typer.Typer(help="Pull, list, verify and switch GGUF models.", no_args_is_help=True)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _Printer:
    """Progress on stderr: one rewritten line on a terminal, a line every 2 s otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p: object) -> None:
        from bastion.llm.pull import Progress

        assert isinstance(p, Progress)
        now = time.monotonic()
        end = p.done >= p.total
        if not self.tty and not end and now - self.last < 2.0:
            return
        self.last = now
        eta = f"ETA {p.eta_s:.0f} s" if p.eta_s is not None and not end else "done"
        pct = 100 * p.done / p.total if p.total else 100.0
        line = (f"{p.file}: {_size(p.done)} / {_size(p.total)} ({pct:.0f}%), "
                f"{_size(p.rate)}/s, {eta}")
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100) + ("\n" if end else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _token() -> str | None:
    """HF_TOKEN from the environment (read by huggingface_hub), else model.hub_token."""
    if os.environ.get("HF_TOKEN"):
        return None  # huggingface_hub reads it itself
    from bastion.config import paths
    from bastion.config.loader import load

    if not paths.config_file().is_file():
        return None
    config = load()
    ref = config.model.hub_token
    if not ref:
        return None
    from bastion.security.secrets.factory import build_backends
    from bastion.security.secrets.resolver import SecretResolver

    return SecretResolver(build_backends(config)).resolve(ref)


def _recommended_quant() -> str:
    from bastion.hardware import recommend
    from bastion.llm.native_build import detect_hardware

    return recommend(detect_hardware()).quant


@model_app.command("pull")
def pull(
    spec: Annotated[str, typer.Argument(
        help="owner/repo[:QUANT or :FILE.gguf]; no QUANT = the one `bastion init` recommends")],
    as_json: JsonOpt = False,
) -> None:
    """Download a GGUF model from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN), verified."""
    from bastion.llm.pull import parse_spec
    from bastion.llm.pull import pull as do_pull

    _, selector = parse_spec(spec)
    manifest = do_pull(spec, token=_token(),
                       recommended=None if selector else _recommended_quant(),
                       report=_Printer())
    if as_json:
        typer.echo(json.dumps(manifest.to_json(), indent=2))
        return
    typer.echo(f"pulled {manifest.name} ({_size(manifest.size)}, sha256 {manifest.sha256}) "
               f"from {manifest.repo}@{(manifest.revision or '?')[:12]}")
    _template_line(manifest)
    typer.echo(f"use it: bastion model use {manifest.name}")


def _template_line(m: store.Manifest, expected: str | None = None) -> None:
    """Say what the pulled GGUF's chat template gives; warn when it is not what was expected."""
    if not m.chat_template:
        typer.echo(f"warning: {m.name} carries no chat template: bastion formats its prompts as "
                   "ChatML, or as Gemma turns when its vocabulary has <start_of_turn> and "
                   "<end_of_turn> (there is no setting for another format)", err=True)
        return
    native = m.tool_format or "none (bastion's constrained tool calling is used)"
    typer.echo(f"chat template: yes; native tool-call format: {native}")
    if expected is not None and m.tool_format != expected:
        typer.echo(f"warning: {m.name}'s chat template defines tool-call format "
                   f"{m.tool_format or 'none'}, the recommendation expects {expected}: "
                   "bastion's constrained tool calling still works; check that the repo is the "
                   "model it names", err=True)


@model_app.command("import")
def import_(
    path: Annotated[str | None, typer.Argument(help="a .gguf file you already have")] = None,
    name: Annotated[str | None, typer.Option("--name", help="model name (default: file name)")]
    = None,
    link: Annotated[bool, typer.Option(
        "--link", help="hard-link instead of copying (same file system)")] = False,
    ollama: Annotated[str | None, typer.Option(
        "--ollama", help="a model Ollama already pulled, e.g. llama3.2:3b (read from its "
        "store, verified by digest)")] = None,
    ollama_store: Annotated[str | None, typer.Option(
        "--ollama-store", help="Ollama's model store (default: $OLLAMA_MODELS or "
        "~/.ollama/models)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Install a GGUF you already have: checked, hashed, copied (or linked), with a manifest."""
    from pathlib import Path

    if (path is None) == (ollama is None):
        raise ModelError("give a .gguf file or --ollama MODEL[:TAG] (one of them)",
                         fix="bastion model import ./model.gguf, or "
                             "bastion model import --ollama llama3.2:3b")
    if ollama is not None:
        from bastion.llm.ollama_import import import_ollama

        m = import_ollama(ollama, root=Path(ollama_store) if ollama_store else None,
                          name=name, link=link)
    else:
        assert path is not None
        m = store.import_file(Path(path), name, link=link)
    if as_json:
        typer.echo(json.dumps(m.to_json(), indent=2))
        return
    typer.echo(f"imported {m.name} ({_size(m.size)}, sha256 {m.sha256})")
    typer.echo(f"use it: bastion model use {m.name}")


@model_app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List installed models."""
    models = store.installed()
    if as_json:
        typer.echo(json.dumps([m.to_json() for m in models], indent=2))
        return
    if not models:
        typer.echo("no models installed (fix: bastion model pull OWNER/REPO:QUANT)")
        return
    for m in models:
        typer.echo(f"{m.name}  {_size(m.size)}  sha256:{m.sha256[:12]}  "
                   f"{m.repo or m.source}")


@model_app.command("show")
def show(name: Annotated[str, typer.Argument(help="a name from: bastion model list")],
         as_json: JsonOpt = False) -> None:
    """Show a model's manifest: source, revision, files, size, SHA-256, licence."""
    m = store.read_manifest(name)
    if as_json:
        typer.echo(json.dumps(m.to_json(), indent=2))
        return
    typer.echo(f"name:          {m.name}")
    typer.echo(f"source:        {m.repo or '-'} ({m.source}) revision {m.revision or '-'}")
    typer.echo(f"path:          {store.model_path(m)}")
    typer.echo(f"size:          {_size(m.size)}")
    typer.echo(f"sha256:        {m.sha256}")
    for f in m.files[1:]:
        typer.echo(f"  part {f.name}: sha256 {f.sha256}")
    typer.echo(f"licence:       {m.license or 'unknown'}")
    typer.echo(f"chat template: {'yes' if m.chat_template else 'no (bastion supplies one)'}")
    typer.echo(f"native tool-call format: {m.tool_format or 'none'}")
    typer.echo(f"installed:     {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(m.created))} UTC")


@model_app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="a name from: bastion model list")]) -> None:
    """Delete an installed model."""
    m = store.read_manifest(name)
    from bastion.config import paths
    from bastion.config.loader import load

    if paths.config_file().is_file():
        current = load().model.path
        if current is not None and current.expanduser().resolve() == store.model_path(m).resolve():
            raise ModelError(f"{name} is the model in use (model.path)",
                             fix="switch first: bastion model use OTHER (or bastion config "
                                 "set model.path '')")
    shutil.rmtree(store.model_dir(name))
    typer.echo(f"removed {name} ({_size(m.size)})")


@model_app.command("use")
def use(name: Annotated[str, typer.Argument(help="a name from: bastion model list")]) -> None:
    """Make an installed model the one that answers (model.backend/path/name in bastion.yaml)."""
    use_model(store.read_manifest(name))


def use_model(m: store.Manifest, *, n_ctx: int | None = None,
              n_gpu_layers: int | None = None) -> None:
    """Point bastion.yaml at ``m`` (embedded backend), with the recommended context/offload."""
    path = store.use(m, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers)
    extra = ""
    if n_ctx is not None:
        extra += f", n_ctx {n_ctx}"
    if n_gpu_layers is not None:
        extra += f", GPU layers {'all' if n_gpu_layers < 0 else n_gpu_layers}"
    typer.echo(f"model.path = {store.model_path(m)} (backend embedded{extra}) in {path}")


def pull_recommended(rec: Recommendation) -> store.Manifest:
    """Pull what ``rec`` names (verified), with progress on stderr; return its manifest."""
    from bastion.llm.pull import pull as do_pull

    manifest = do_pull(rec.pull_spec, token=_token(), report=_Printer())
    typer.echo(f"pulled {manifest.name} ({_size(manifest.size)}, sha256 {manifest.sha256}) "
               f"from {manifest.repo}@{(manifest.revision or '?')[:12]}")
    _template_line(manifest, rec.tool_format)
    return manifest


@model_app.command("recommend")
def recommend_cmd(as_json: JsonOpt = False) -> None:
    """Say which model `bastion init --pull` would fetch for this hardware, and why."""
    from bastion.hardware import recommend
    from bastion.llm.native_build import detect_hardware

    hw = detect_hardware()
    rec = recommend(hw)
    if as_json:
        typer.echo(json.dumps({
            "model": rec.model, "repo": rec.repo, "quant": rec.quant, "pull": rec.pull_spec,
            "size_b": rec.size_b, "context": rec.context, "gpu_layers": rec.gpu_layers,
            "threads": rec.threads, "budget_gb": rec.budget_gb, "accelerator": hw.accelerator,
            "reasons": rec.reasons}, indent=2))
        return
    offload = ("CPU only" if rec.gpu_layers == 0 else
               f"all layers on the GPU ({hw.accelerator})" if rec.gpu_layers < 0 else
               f"{rec.gpu_layers} layers on the GPU")
    typer.echo(f"recommended: {rec.model} {rec.quant} ({rec.size_b:g}B) from {rec.repo}")
    typer.echo(f"settings:    context {rec.context}, {offload}, {rec.threads} threads")
    typer.echo("why:")
    for reason in rec.reasons:
        typer.echo(f"  - {reason}")
    typer.echo(f"pull it:     bastion model pull {rec.pull_spec}   (or: bastion init --pull)")


@model_app.command("verify")
def verify(name: Annotated[str | None, typer.Argument(
        help="a model (default: all installed)")] = None) -> None:
    """Re-hash the model files and compare them with their manifests; exit 1 on a mismatch."""
    models = [store.read_manifest(name)] if name else store.installed()
    bad = 0
    for m in models:
        t0 = time.monotonic()
        failed = store.verify(m)
        dt = time.monotonic() - t0
        if failed:
            bad += 1
            typer.echo(f"FAIL {m.name}: {', '.join(failed)} differ from the manifest "
                       f"(fix: bastion model rm {m.name} && bastion model pull "
                       f"{m.repo or 'REPO'}:{m.files[0].name})")
        else:
            typer.echo(f"ok   {m.name} ({_size(m.size)}, {_size(m.size / max(dt, 1e-6))}/s)")
            store.write_manifest(m)  # record the verified size + mtime again
    if not models:
        typer.echo("no models installed")
    if bad:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``model`` group to ``app``."""
    app.add_typer(model_app, name="model")
