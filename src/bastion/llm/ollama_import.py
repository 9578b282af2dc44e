"""``bastion model import --ollama NAME[:TAG]``: use a model an Ollama install already pulled.

Ollama keeps content-addressed blobs and OCI-style manifests::

    <store>/manifests/registry.ollama.ai/library/llama3.2/3b    (JSON: config + layers)
    <store>/blobs/sha256-<hex>                                   (one file per layer)

The layer with media type ``application/vnd.ollama.image.model`` is a GGUF file. It is read
(never changed: the Ollama store stays as it was), checked (GGUF header), copied or hard-linked
into ``<home>/models/<name>/<name>.gguf`` while it is hashed, and installed only if its SHA-256
equals the layer's digest. The licence layer, if any, fills the manifest's licence.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from bastion.errors import ModelError
from bastion.llm import store

MODEL_LAYER = "application/vnd.ollama.image.model"
LICENSE_LAYER = "application/vnd.ollama.image.license"
DEFAULT_REGISTRY = "registry.ollama.ai"
_CHUNK = 8 * 1024 * 1024


def default_store() -> Path:
    """Return Ollama's model store.

    ``$OLLAMA_MODELS``, else ``~/.ollama/models``, else the Linux service's
    ``/usr/share/ollama/.ollama/models``.
    """
    env = os.environ.get("OLLAMA_MODELS")
    if env:
        return Path(env).expanduser()
    home = Path.home() / ".ollama" / "models"
    service = Path("/usr/share/ollama/.ollama/models")
    return home if home.is_dir() or not service.is_dir() else service


def manifest_path(root: Path, ref: str) -> tuple[Path, str]:
    """Return the manifest file of ``ref`` and the canonical ``model:tag`` shown to the user.

    ``ref`` is ``model[:tag]`` (Ollama's library), ``user/model[:tag]`` or
    ``host/namespace/model[:tag]``.
    """
    name, _, tag = ref.partition(":")
    tag = tag or "latest"
    parts = [p for p in name.split("/") if p]
    if not parts or len(parts) > 3 or not all(
            re.fullmatch(r"[A-Za-z0-9][\w.-]*", p) for p in [*parts, tag]):
        raise ModelError(f"not an Ollama model name: {ref!r}",
                         fix="name it as MODEL[:TAG], e.g. llama3.2:3b (see: ollama list)")
    if len(parts) == 1:
        parts = [DEFAULT_REGISTRY, "library", *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_REGISTRY, *parts]
    shown = "/".join(parts[2:] if parts[:2] == [DEFAULT_REGISTRY, "library"] else
                     parts[1:] if parts[0] == DEFAULT_REGISTRY else parts) + f":{tag}"
    return root.joinpath("manifests", *parts, tag), shown


def _blob(root: Path, digest: str) -> Path:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise ModelError(f"the Ollama manifest names an unexpected digest {digest[:80]!r}",
                         fix="pull the model again with ollama pull")
    for candidate in (root / "blobs" / f"sha256-{hexd}", root / "blobs" / f"sha256:{hexd}"):
        if candidate.is_file():
            return candidate
    raise ModelError(f"the Ollama store has no blob {digest[:19]}... for this model",
                     fix="pull the model again with ollama pull (the store is incomplete)")


def _read_manifest(path: Path, shown: str, root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise ModelError(f"no Ollama model store at {root}",
                         fix="pass --ollama-store DIR (or set OLLAMA_MODELS) to where Ollama "
                             "keeps its models")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"Ollama has no model {shown} in {root}",
                         fix="see its models with: ollama list (or pass --ollama-store)") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"the Ollama manifest of {shown} is unreadable: {exc}",
                         fix=f"pull it again with: ollama pull {shown}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        raise ModelError(f"the Ollama manifest of {shown} has no layers",
                         fix=f"pull it again with: ollama pull {shown}")
    return data


def _copy_hashing(src: Path, dest: Path, link: bool) -> str:
    """Copy (or hard-link) ``src`` to ``dest``; return the SHA-256 of what ``dest`` holds."""
    if link:
        try:
            os.link(src, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            raise ModelError(f"{src} is on another file system than {dest.parent}",
                             fix="import without --link (a copy)") from exc
        return store.sha256_file(dest)
    h = hashlib.sha256()
    with src.open("rb") as fin, dest.open("xb") as fout:
        dest.chmod(0o600)
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
    return h.hexdigest()


def import_ollama(ref: str, *, root: Path | None = None, name: str | None = None,
                  link: bool = False) -> store.Manifest:
    """Install the GGUF of Ollama model ``ref`` from its store, verified by digest."""
    from bastion.llm.embedded import check_gguf

    root = (root or default_store()).expanduser()
    mpath, shown = manifest_path(root, ref)
    data = _read_manifest(mpath, shown, root)
    layers = [x for x in data["layers"] if isinstance(x, dict)]
    model = next((x for x in layers if x.get("mediaType") == MODEL_LAYER), None)
    if model is None or not isinstance(model.get("digest"), str):
        raise ModelError(f"the Ollama model {shown} has no GGUF weights layer",
                         fix="import a model Ollama runs itself (not a remote/cloud one)")
    digest = str(model["digest"])
    blob = _blob(root, digest)
    check_gguf(blob)
    name = name or re.sub(r"[^A-Za-z0-9._-]", "-", shown.replace(":", "-")).strip(".-")[:128]
    folder = store.model_dir(name)
    if (folder / store.MANIFEST).exists():
        raise ModelError(f"a model named {name!r} is already installed",
                         fix=f"pick another with --name, or: bastion model rm {name}")
    licence = None
    lic = next((x for x in layers if x.get("mediaType") == LICENSE_LAYER), None)
    if lic is not None and isinstance(lic.get("digest"), str):
        try:
            first = _blob(root, lic["digest"]).read_text(errors="replace").strip().splitlines()
            licence = first[0][:120] if first else None
        except ModelError:
            licence = None
    from bastion.config import paths

    paths.private_dir(folder)
    dest = folder / f"{name}.gguf"
    try:
        got = _copy_hashing(blob, dest, link)
        if got != digest.split(":", 1)[1]:
            raise ModelError(
                f"the Ollama blob of {shown} does not match its digest: SHA-256 {got[:16]}... "
                f"but the manifest says {digest[7:23]}... (nothing was installed)",
                fix=f"the Ollama store is damaged: ollama rm {shown} && ollama pull {shown}",
            )
        manifest = store.Manifest(
            name=name, source="ollama", repo=f"ollama:{shown}",
            revision=store.sha256_file(mpath), license=licence,
            files=[store.ModelFile(dest.name, dest.stat().st_size, got)],
            **store.template_facts(dest),
        )
        store.write_manifest(manifest)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return manifest
