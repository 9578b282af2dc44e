"""Pulled and imported models: one folder each under ``<home>/models``, with a manifest.

A manifest (``manifest.json``, 0600, in a 0700 folder) records where the weights came from
(repo, revision commit, files), their size and SHA-256, the licence, whether the GGUF carries a
chat template and which tool-call format it defines, and when. It also records each file's size
and mtime at the moment it was hashed: loading a model compares those (cheap, one ``stat`` per
file) and refuses a file that changed; ``bastion model verify`` re-hashes the whole file.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bastion.config import paths
from bastion.errors import BastionError, ModelError

MANIFEST = "manifest.json"
SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_CHUNK = 8 * 1024 * 1024


@dataclass(slots=True)
class ModelFile:
    """One weights file of a model (a split GGUF has several)."""

    name: str
    size: int
    sha256: str
    mtime_ns: int = 0


@dataclass(slots=True)
class Manifest:
    """What is known about one installed model."""

    name: str
    source: str  # "hf" (pulled), "import" (a file) or "ollama" (from an Ollama store)
    repo: str | None
    revision: str | None
    files: list[ModelFile]
    license: str | None = None
    chat_template: bool = False
    tool_format: str | None = None  # the template's native tool-call format (see tool_format)
    created: float = field(default_factory=time.time)

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(f.size for f in self.files)

    @property
    def sha256(self) -> str:
        """The model's identity: the first file's SHA-256 (the one llama.cpp is given)."""
        return self.files[0].sha256

    def to_json(self) -> dict[str, Any]:
        """Return the manifest as JSON-ready data."""
        data = asdict(self)
        data["size"] = self.size
        data["sha256"] = self.sha256
        return data


def models_dir() -> Path:
    """Return ``<home>/models`` (created 0700)."""
    return paths.data_dir("models")


def model_dir(name: str) -> Path:
    """Return the folder of model ``name`` (not created)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name) or ".." in name:
        raise ModelError(f"invalid model name {name!r}",
                         fix="use a name from: bastion model list")
    return models_dir() / name


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file (streamed)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def has_chat_template(path: Path) -> bool:
    """Whether the GGUF header carries ``tokenizer.chat_template`` (metadata precedes tensors)."""
    with path.open("rb") as f:
        head = f.read(32 * 1024 * 1024)
    return b"tokenizer.chat_template" in head


def chat_template(path: Path) -> str | None:
    """Return the GGUF's ``tokenizer.chat_template`` text (None: none, or unreadable).

    Read by llama.cpp's own loader, the vocabulary alone (~0.1 s), where it runs here;
    otherwise with ``gguf``'s reader (the ``models`` extra), which builds a Python object for
    every token and merge of the vocabulary first: 2.2 s for the shipped 49k-token model, the
    larger part of a pull from a fast mirror (bench/models.py).
    """
    text = _template_by_llama_cpp(path)
    if text is not None:
        return text or None
    try:
        import gguf
    except ImportError:
        return None
    try:
        field_ = gguf.GGUFReader(str(path)).fields.get("tokenizer.chat_template")
        if field_ is None or not field_.data:
            return None
        return bytes(field_.parts[field_.data[0]]).decode("utf-8", "replace")
    except (OSError, ValueError, IndexError, KeyError):  # not a GGUF, or a damaged header
        return None


def _template_by_llama_cpp(path: Path) -> str | None:
    """Return the template as llama.cpp reads it ("" if none); None where llama.cpp cannot."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return None
    from bastion.llm import native_build
    from bastion.llm.embedded import load_vocab

    if native_build.refusal() is not None:  # built for another CPU: nothing native runs
        return None
    try:
        vocab = load_vocab(path)
    except BastionError:  # not a model llama.cpp loads (a header-only test file, a damaged one)
        return None
    return str(vocab.metadata.get("tokenizer.chat_template", ""))


def template_facts(path: Path) -> dict[str, Any]:
    """Return the manifest fields about the GGUF's chat template: present, tool-call format."""
    text = chat_template(path)
    return {"chat_template": text is not None or has_chat_template(path),
            "tool_format": tool_format(text)}


#: Tool-call formats a chat template can define, by the marker its tool-call turns use.
TOOL_FORMATS: tuple[tuple[str, str], ...] = (
    ("<tool_call>", "hermes"),  # Qwen2.5, Hermes, SmolLM3: <tool_call>{json}</tool_call>
    ("<|python_tag|>", "llama3"),  # Llama 3.1-3.3: JSON after the ipython role / python_tag
    ("[TOOL_CALLS]", "mistral"),
    ("<|tool_call_start|>", "lfm"),
)


def tool_format(template: str | None) -> str | None:
    """Name the native tool-call format a chat template defines (None: it defines none).

    ``generic`` is a template that renders ``tools`` without a known call marker. Without a
    native format bastion's constrained tool calling (choose, then fill) is what calls tools.
    """
    if not template:
        return None
    for marker, name in TOOL_FORMATS:
        if marker in template:
            return name
    return "generic" if re.search(r"\btools\b", template) else None


def write_manifest(manifest: Manifest) -> Path:
    """Write ``manifest.json`` into the model's folder (0600) and return its path."""
    folder = paths.private_dir(model_dir(manifest.name))
    for f in manifest.files:
        f.mtime_ns = (folder / f.name).stat().st_mtime_ns
    return paths.write_private(folder / MANIFEST, json.dumps(manifest.to_json(), indent=2))


def read_manifest(name: str) -> Manifest:
    """Read the manifest of an installed model; a missing one is a :class:`ModelError`."""
    path = model_dir(name) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ModelError(f"no installed model named {name!r}",
                         fix="see the names with: bastion model list") from err
    except (OSError, ValueError) as exc:
        raise ModelError(f"the manifest of {name!r} is unreadable: {exc}",
                         fix=f"bastion model rm {name} and pull it again") from exc
    files = [ModelFile(**f) for f in data["files"]]
    return Manifest(name=data["name"], source=data["source"], repo=data.get("repo"),
                    revision=data.get("revision"), files=files, license=data.get("license"),
                    chat_template=bool(data.get("chat_template")),
                    tool_format=data.get("tool_format"), created=data["created"])


def installed() -> list[Manifest]:
    """Return the manifests of all installed models, by name."""
    root = models_dir()
    return [read_manifest(p.parent.name) for p in sorted(root.glob(f"*/{MANIFEST}"))]


def model_path(manifest: Manifest) -> Path:
    """Return the file llama.cpp loads (the first part of a split model)."""
    return model_dir(manifest.name) / manifest.files[0].name


def manifest_for(path: Path) -> Manifest | None:
    """Return the manifest that covers ``path``, if it lies in an installed model's folder."""
    path = path.expanduser().resolve()
    root = paths.home() / "models"
    try:
        rel = path.relative_to(root.resolve())
    except ValueError:
        return None
    if len(rel.parts) != 2 or not (root / rel.parts[0] / MANIFEST).is_file():
        return None
    return read_manifest(rel.parts[0])


def identify(path: Path, cache_file: Path | None = None) -> str:
    """Return the SHA-256 of a model file: from its manifest, else hashed once and cached.

    The cache (``cache_file``, default ``<home>/models/.hashes.json``) is keyed by the resolved
    path and re-hashes when the size or mtime changes, so only the first load of an unmanaged
    file pays for it.
    """
    manifest = manifest_for(path)
    if manifest is not None and path.name == manifest.files[0].name:
        return manifest.sha256
    path = path.expanduser().resolve()
    st = path.stat()
    cache_file = cache_file or models_dir() / ".hashes.json"
    try:
        cache: dict[str, Any] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(str(path))
    if isinstance(hit, dict) and hit.get("size") == st.st_size and \
            hit.get("mtime_ns") == st.st_mtime_ns and isinstance(hit.get("sha256"), str):
        return str(hit["sha256"])
    sha = sha256_file(path)
    cache[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    # (a cache shared by several processes: each write is whole, the last one wins)
    paths.write_private(cache_file, json.dumps(cache))
    return sha


def check_unchanged(manifest: Manifest) -> None:
    """Refuse a model whose files changed since they were hashed (size + mtime: one stat each)."""
    folder = model_dir(manifest.name)
    for f in manifest.files:
        try:
            st = (folder / f.name).stat()
        except FileNotFoundError as exc:
            raise ModelError(f"model {manifest.name}: file {f.name} is missing",
                             fix=f"bastion model rm {manifest.name} and pull it again") from exc
        if st.st_size != f.size or st.st_mtime_ns != f.mtime_ns:
            raise ModelError(
                f"model {manifest.name}: {f.name} changed since it was verified "
                "(size or modification time differs from its manifest)",
                fix=f"bastion model verify {manifest.name} (re-hash), or pull it again",
            )


def verify(manifest: Manifest) -> list[str]:
    """Re-hash every file; return the names whose SHA-256 differs from the manifest."""
    folder = model_dir(manifest.name)
    bad = []
    for f in manifest.files:
        p = folder / f.name
        if not p.is_file() or sha256_file(p) != f.sha256:
            bad.append(f.name)
    return bad


def import_file(src: Path, name: str | None = None, *, link: bool = False) -> Manifest:
    """Install a GGUF the user already has: header check, hash, copy (or hard link), manifest."""
    import errno
    import os
    import shutil

    from bastion.llm.embedded import check_gguf

    src = src.expanduser().resolve()
    if not src.is_file():
        raise ModelError(f"no such file: {src}", fix="give the path of a .gguf file")
    check_gguf(src)
    if SPLIT_RE.search(src.name):
        raise ModelError("a split GGUF cannot be imported part by part",
                         fix="merge it first (llama-gguf-split --merge), then import the result")
    name = name or re.sub(r"[^A-Za-z0-9._-]", "-", src.stem).strip(".-")[:128] or "model"
    folder = model_dir(name)
    if (folder / MANIFEST).exists():
        raise ModelError(f"a model named {name!r} is already installed",
                         fix=f"pick another with --name, or: bastion model rm {name}")
    paths.private_dir(folder)
    dest = folder / src.name
    try:
        if link:
            try:
                os.link(src, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                raise ModelError(f"{src} is on another file system than {folder}",
                                 fix="import without --link (a copy)") from exc
        else:
            shutil.copyfile(src, dest)
            dest.chmod(0o600)
        manifest = Manifest(name=name, source="import", repo=None, revision=None,
                            files=[ModelFile(dest.name, dest.stat().st_size, sha256_file(dest))],
                            **template_facts(dest))
        write_manifest(manifest)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return manifest


def use(manifest: Manifest, *, n_ctx: int | None = None,
        n_gpu_layers: int | None = None) -> Path:
    """Point bastion.yaml at ``manifest`` (embedded backend); return the config file written.

    What ``bastion model use`` and ``POST /v1/models/use`` do; a running server loads the new
    model when it is restarted.
    """
    check_unchanged(manifest)
    from bastion.config.loader import read_raw, save, validate

    path = paths.config_file()
    if not path.is_file():
        raise ModelError("bastion is not set up yet", fix="run: bastion init")
    raw = read_raw(path)
    model = raw.setdefault("model", {})
    if not isinstance(model, dict):
        raise ModelError(f"the model section of {path} is not a mapping",
                         fix="bastion config show, then fix bastion.yaml")
    model.update(backend="embedded", path=str(model_path(manifest)), name=manifest.name)
    model.pop("base_url", None)  # a server's URL: the embedded backend runs the GGUF itself
    if n_ctx is not None:
        model["n_ctx"] = n_ctx
    if n_gpu_layers is not None:
        model["n_gpu_layers"] = n_gpu_layers
    save(validate(raw, str(path)), path)  # one write, valid as a whole
    return path
