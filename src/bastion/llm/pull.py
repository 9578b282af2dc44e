"""``bastion model pull``: fetch a GGUF model from the Hugging Face Hub, verified.

The download is ``huggingface_hub``'s own (metadata and ``http_get``: it honours ``HF_ENDPOINT`` and
``HF_TOKEN``; its ``http_get`` resumes a ``.part`` file with a Range request). bastion adds:
the choice of the GGUF file for a quantisation, a free-disk check before the first byte, a
SHA-256 check of every file against the hub's LFS metadata, and a manifest written only after
all files verified (so a cut or corrupt download is never "installed").
"""

from __future__ import annotations

import errno
import hashlib
import io
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion._extras import require
from bastion.config import paths
from bastion.errors import ModelError
from bastion.llm import store

QUANT_RE = re.compile(r"(?:IQ\d_[A-Z0-9_]+|Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)", re.IGNORECASE)
PARTIAL = ".partial"  # <home>/models/.partial/<name>: downloads in progress


@dataclass(slots=True)
class Progress:
    """One progress report: ``done`` of ``total`` bytes of ``file``."""

    file: str
    done: int
    total: int
    rate: float  # bytes/s in this run
    eta_s: float | None


Reporter = Callable[[Progress], None]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``owner/repo[:quant or file]`` into the repo and the selector."""
    repo, _, sel = spec.partition(":")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo):
        raise ModelError(f"not a Hugging Face repo: {spec!r}",
                         fix="name it as owner/repo[:QUANT], e.g. "
                             "bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M")
    return repo, sel or None


def _quant_of(filename: str) -> str | None:
    stem = store.SPLIT_RE.sub(".gguf", filename)[: -len(".gguf")]
    found = QUANT_RE.findall(stem.rsplit("/", 1)[-1])
    return found[-1].upper() if found else None


def choose_files(ggufs: list[str], selector: str | None, recommended: str | None) -> list[str]:
    """Pick the GGUF file (all parts of a split one) for a file name or quantisation."""
    if not ggufs:
        raise ModelError("the repo has no .gguf file",
                         fix="pull a GGUF repo (its name usually ends in -GGUF)")
    if selector and selector.lower().endswith(".gguf"):
        if selector not in ggufs:
            raise ModelError(f"the repo has no file {selector!r}",
                             fix=f"pick one of: {', '.join(sorted(ggufs))}")
        chosen = [selector]
    else:
        quant = (selector or recommended or "").upper()
        chosen = [g for g in ggufs if _quant_of(g) == quant]
        if not chosen and selector is None and len(ggufs) == 1:
            chosen = ggufs
        if not chosen:
            quants = sorted({q for g in ggufs if (q := _quant_of(g))})
            raise ModelError(
                f"the repo has no {quant or 'matching'} GGUF file",
                fix=f"add one of its quantisations: REPO:{' | REPO:'.join(quants) or 'FILE.gguf'}",
            )
    first = chosen[0]
    m = store.SPLIT_RE.search(first)
    if m:  # every part of the split file, in order
        prefix = first[: m.start()]
        chosen = sorted(g for g in ggufs if g.startswith(prefix) and store.SPLIT_RE.search(g))
        want = int(m.group(2))
        if len(chosen) != want:
            raise ModelError(f"the repo has {len(chosen)} of the {want} parts of {prefix}",
                             fix="pull another quantisation, or ask the repo's owner")
    elif len(chosen) > 1:
        raise ModelError(f"several files match: {', '.join(chosen)}",
                         fix="name the file: REPO:FILE.gguf")
    return chosen


def model_name(repo: str, first: str) -> str:
    """Name a pulled model after its file: ``SmolLM2-135M-Instruct.Q4_1`` etc."""
    stem = store.SPLIT_RE.sub(".gguf", first.rsplit("/", 1)[-1])[: -len(".gguf")]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", stem).strip(".-") or repo.split("/")[1]
    return name[:128]


def _hub_error(exc: Exception, repo: str, endpoint: str) -> ModelError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return ModelError(f"cannot reach the Hugging Face Hub at {endpoint} (offline mode)",
                          fix="unset HF_HUB_OFFLINE, or set HF_ENDPOINT to a reachable mirror")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError) or status in (401, 403):
        return ModelError(
            f"{repo} is gated or private: the hub at {endpoint} refused access ({status})",
            fix="accept its licence on the hub, then export HF_TOKEN=hf_... (or set "
                "model.hub_token to a secret:// reference)",
        )
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        return ModelError(f"no repo {repo} on {endpoint}",
                          fix="check the name (owner/repo) on the hub's web site")
    if isinstance(exc, HfHubHTTPError):
        return ModelError(f"the hub at {endpoint} answered {status}: {exc}".splitlines()[0],
                          fix="try again later, or set HF_ENDPOINT to a mirror")
    return ModelError(
        f"cannot reach the Hugging Face Hub at {endpoint} (HF_ENDPOINT; {type(exc).__name__})",
        fix="check the network, or set HF_ENDPOINT to a reachable mirror",
    )


def _progress_class(report: Reporter, filename: str) -> Any:
    """Return a tqdm class that reports to ``report`` (and prints nothing itself)."""
    from tqdm import tqdm

    class _Bar(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs.update(disable=False, file=io.StringIO())
            super().__init__(*args, **kwargs)
            self._t0 = time.monotonic()
            self._n0 = self.n
            self._last = 0.0

        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            now = time.monotonic()
            done, total = int(self.n), int(self.total or 0)
            if now - self._last >= 0.25 or done >= total:
                self._last = now
                rate = (done - self._n0) / max(now - self._t0, 1e-6)
                eta = (total - done) / rate if rate > 0 else None
                report(Progress(filename, done, total, rate, eta))
            return out  # type: ignore[no-any-return]

    return _Bar


def check_disk(folder: Path, need: int) -> None:
    """Refuse to start a download that cannot fit (with 1% + 64 MiB to spare)."""
    free = shutil.disk_usage(folder).free
    if need + need // 100 + (64 << 20) > free:
        raise ModelError(
            f"not enough disk space in {folder}: the model needs {need / 1e9:.2f} GB more, "
            f"{free / 1e9:.2f} GB are free",
            fix="free some space, or set BASTION_HOME to a larger disk",
        )


class _HashingFile:
    """A ``.part`` file opened for appending that hashes what is written, as it is written.

    So verification costs no second pass over the file: the hash of the resumed prefix is
    computed first, then every chunk ``http_get`` writes is added, in a helper thread while the
    next chunk arrives (hashlib releases the GIL; at most one chunk waits). A truncation (a
    server that ignored the Range request) restarts the hash from what is left in the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        if path.exists():
            with path.open("rb") as f:
                self.hasher = hashlib.file_digest(f, "sha256")
        self.f = path.open("ab")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-hash")
        self._pending: Future[None] | None = None

    def _drain(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def write(self, data: bytes) -> int:
        """Append ``data`` and add it to the hash (in the helper thread)."""
        self._drain()
        self._pending = self._pool.submit(self.hasher.update, data)
        return self.f.write(data)

    def hexdigest(self) -> str:
        """Return the SHA-256 of everything in the file."""
        self._drain()
        return self.hasher.hexdigest()

    def tell(self) -> int:
        """Return the file position."""
        return self.f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        """Move the file position (only before a truncate, as ``http_get`` does)."""
        return self.f.seek(pos, whence)

    def truncate(self, size: int | None = None) -> int:
        """Cut the file and re-hash what remains."""
        self._drain()
        out = self.f.truncate(size)
        self.f.flush()
        with self.path.open("rb") as f:
            self.hasher = hashlib.file_digest(f, "sha256")
        return out

    def flush(self) -> None:
        """Flush the file."""
        self.f.flush()

    def close(self) -> None:
        """Close the file and stop the helper thread."""
        self._drain()
        self._pool.shutdown()
        self.f.close()


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it, inside the hub client) is a full disk."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _disk_full_error(filename: str, staging: Path, need: int) -> ModelError:
    """Drop the partial download (a full disk must not stay full) and say what to do."""
    freed = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    shutil.rmtree(staging, ignore_errors=True)
    return ModelError(
        f"the disk filled up while pulling {filename}: the partial download "
        f"({freed / 1e6:.0f} MB) was removed, nothing was installed or changed",
        fix=f"free {need / 1e9:.2f} GB in {staging.parent.parent}, or set BASTION_HOME to a "
            "larger disk, then pull again",
    )


def _download(repo: str, filename: str, revision: str | None, part: Path, size: int,
              token: str | None, report: Reporter | None, endpoint: str) -> str:
    """Fetch one file into ``part`` with the hub client's HTTP code, resuming what is there.

    ``huggingface_hub`` 1.x+ downloads into a per-process temporary file and drops it on failure,
    so a killed ``hf_hub_download`` starts from zero; bastion keeps its own ``.part`` file and
    asks the client's ``http_get`` for the rest (an HTTP Range request). Returns the SHA-256
    of the whole file, computed while it was written.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils._headers import build_hf_headers

    meta = get_hf_file_metadata(
        hf_hub_url(repo, filename, revision=revision, endpoint=endpoint), token=token)
    if meta.size is not None and meta.size != size:
        raise ModelError(f"the hub lists {filename} as {size} bytes but serves {meta.size}",
                         fix="try again later, or set HF_ENDPOINT to another mirror")
    have = part.stat().st_size if part.exists() else 0
    if have > size:  # not a prefix of this file: start over
        part.unlink()
        have = 0
    out = _HashingFile(part)
    try:
        if have < size:
            http_get(meta.location, out, resume_size=have,  # type: ignore[arg-type]
                     headers=build_hf_headers(token=token), expected_size=size,
                     displayed_filename=filename,
                     tqdm_class=_progress_class(report, filename) if report else None)
    finally:
        out.close()
    return out.hexdigest()


def pull(spec: str, *, token: str | None = None, recommended: str | None = None,
         report: Reporter | None = None, endpoint: str | None = None) -> store.Manifest:
    """Download, verify and install the model ``spec`` names; return its manifest.

    ``endpoint`` defaults to ``HF_ENDPOINT`` (``https://huggingface.co`` when unset).
    """
    require("huggingface_hub", extra="models", feature="bastion model pull")
    from huggingface_hub import HfApi, constants

    repo, selector = parse_spec(spec)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(repo, files_metadata=True)
    except Exception as exc:  # the hub client raises many kinds; each becomes one line
        raise _hub_error(exc, repo, endpoint) from None
    siblings = {s.rfilename: s for s in info.siblings or []}
    names = choose_files([n for n in siblings if n.lower().endswith(".gguf")], selector,
                         recommended)
    expected: dict[str, tuple[int, str]] = {}
    for n in names:
        lfs = siblings[n].lfs
        if lfs is None or not lfs.sha256:
            raise ModelError(f"the hub gives no SHA-256 for {n}, so it cannot be verified",
                             fix="pull a repo whose GGUF files are stored with LFS")
        expected[n] = (int(lfs.size), lfs.sha256)
    name = model_name(repo, names[0])
    target = store.model_dir(name)
    if (target / store.MANIFEST).is_file():
        old = store.read_manifest(name)
        if [f.sha256 for f in old.files] == [expected[n][1] for n in names]:
            return old
    staging = paths.private_dir(store.models_dir() / PARTIAL / name)
    have = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    check_disk(staging, sum(size for size, _ in expected.values()) - have)
    files: list[store.ModelFile] = []
    for n in names:
        size, sha = expected[n]
        part = staging / (n.replace("/", "_") + ".part")
        try:
            got = _download(repo, n, info.sha, part, size, token, report, endpoint)
        except ModelError:
            raise
        except Exception as exc:
            if _disk_full(exc):
                raise _disk_full_error(n, staging, sum(s for s, _ in expected.values())
                                       ) from None
            raise _hub_error(exc, repo, endpoint) from None
        if got != sha:
            part.unlink()
            raise ModelError(
                f"{n} failed verification: SHA-256 {got[:16]}... but the hub says {sha[:16]}... "
                "(the file was deleted, nothing was installed)",
                fix="pull it again; if it fails again, the mirror (HF_ENDPOINT) serves bad data",
            )
        files.append(store.ModelFile(name=n.rsplit("/", 1)[-1], size=size, sha256=sha))
    paths.private_dir(target)
    for n, f in zip(names, files, strict=True):
        (staging / (n.replace("/", "_") + ".part")).replace(target / f.name)
    card = getattr(info, "card_data", None)
    licence = (card.get("license") if card is not None else None) or None
    manifest = store.Manifest(
        name=name, source="hf", repo=repo, revision=info.sha, files=files,
        license=str(licence) if licence else None,
        chat_template=store.has_chat_template(target / files[0].name),
    )
    store.write_manifest(manifest)
    shutil.rmtree(staging, ignore_errors=True)
    return manifest
