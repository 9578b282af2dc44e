"""``bastion model pull``: fetch a GGUF model from the Hugging Face Hub, verified.

The hub protocol is ``huggingface_hub``'s own (metadata, URLs, headers, its HTTP session with
retry/backoff; it honours ``HF_ENDPOINT`` and ``HF_TOKEN``). bastion adds: a ``.part`` file resumed
with a Range request (also across runs), the body loop that hashes while it writes,
the choice of the GGUF file for a quantisation, a free-disk check before the first byte, a
SHA-256 check of every file against the hub's LFS metadata, and a manifest written only after
all files verified (so a cut or corrupt download is never "installed").
"""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bastion._extras import hub_online_unless_the_user_said_offline, require
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
    computed first; then the received pieces are gathered into batches of ~8 MiB, and a helper
    thread hashes and writes each batch while the next one arrives (hashlib and file writes
    release the GIL; at most one batch waits, so memory stays bounded). A truncation (a server
    that ignored the Range request) restarts the hash from what is left in the file.
    """

    BATCH = 8 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        if path.exists():
            with path.open("rb") as f:
                self.hasher = hashlib.file_digest(f, "sha256")
        self.f = path.open("ab")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pull-hash")
        self._pending: Future[None] | None = None
        self._batch: list[bytes] = []
        self._batched = 0
        self._pos = self.f.tell()

    def _drain(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def _consume(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.hasher.update(piece)
            self.f.write(piece)

    def _submit(self) -> None:
        self._drain()
        if self._batch:
            self._pending = self._pool.submit(self._consume, self._batch)
            self._batch, self._batched = [], 0

    def write(self, data: bytes) -> int:
        """Append ``data`` (hashed and written by the helper thread, in batches)."""
        self._batch.append(data)
        self._batched += len(data)
        self._pos += len(data)
        if self._batched >= self.BATCH:
            self._submit()
        return len(data)

    def hexdigest(self) -> str:
        """Return the SHA-256 of everything in the file."""
        self._submit()
        self._drain()
        return self.hasher.hexdigest()

    def tell(self) -> int:
        """Return the file length, counting what is still in the batch."""
        return self._pos

    def truncate(self, size: int = 0) -> int:
        """Cut the file to ``size`` bytes and re-hash what remains."""
        self._batch, self._batched = [], 0
        self._drain()
        self.f.truncate(size)
        self.f.flush()
        self._pos = size
        with self.path.open("rb") as f:
            self.hasher = hashlib.file_digest(f, "sha256")
        return size

    def close(self) -> None:
        """Write what is left, close the file and stop the helper thread."""
        try:
            self._submit()
            self._drain()
        finally:
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


_RETRIES = 5  # transient network errors in a row (no byte received in between) before giving up


def _stream(url: str, out: _HashingFile, size: int, headers: dict[str, str],
            report: Reporter | None, filename: str) -> None:
    """Fetch the rest of ``url`` (from ``out.tell()``) into ``out``, resuming on network errors.

    The request and its retry/backoff are ``huggingface_hub``'s (``http_stream_backoff``, its
    session, headers and error mapping); the body loop is bastion's own: ``http_get`` gathers
    the body into 10 MB pieces through an in-memory buffer, which costs more CPU on a fast
    link than the SHA-256 does (bench/models.py); here each received piece goes straight on.
    """
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils._http import hf_raise_for_status, http_stream_backoff

    retries, t0, last = _RETRIES, time.monotonic(), 0.0
    start0 = out.tell()
    while out.tell() < size:
        have = out.tell()
        try:
            with http_stream_backoff(
                method="GET", url=url, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                headers={**headers, "Range": f"bytes={have}-"} if have else headers,
                retry_on_exceptions=(), retry_on_status_codes=(408, 429),
            ) as response:
                hf_raise_for_status(response)
                if have and response.status_code == 200:  # the server ignored the Range
                    out.truncate(0)
                for piece in response.iter_bytes():
                    if not piece:
                        continue
                    out.write(piece)
                    retries = _RETRIES
                    if out.tell() > size:
                        break
                    now = time.monotonic()
                    if report is not None and (now - last >= 0.25 or out.tell() >= size):
                        last = now
                        rate = (out.tell() - start0) / max(now - t0, 1e-6)
                        eta = (size - out.tell()) / rate if rate > 0 else None
                        report(Progress(filename, out.tell(), size, rate, eta))
        except (httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError):
            if retries <= 0:
                raise
            retries -= 1
            time.sleep(1)
            continue
        if out.tell() == have:
            break  # the server sent nothing more
    if out.tell() != size:
        raise ModelError(
            f"{filename}: the hub sent {out.tell()} bytes, the file has {size}",
            fix="pull it again (it resumes); if it fails again, try another mirror (HF_ENDPOINT)")


def _download(repo: str, filename: str, revision: str | None, part: Path, size: int,
              token: str | None, report: Reporter | None, endpoint: str) -> str:
    """Fetch one file into ``part``, resuming what is there; return its SHA-256.

    ``huggingface_hub`` 1.x+ downloads into a per-process temporary file and drops it on failure,
    so a killed ``hf_hub_download`` starts from zero; bastion keeps its own ``.part`` file and
    asks for the rest with an HTTP Range request. The SHA-256 of the whole file is computed
    while it is written.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils._headers import build_hf_headers

    meta = get_hf_file_metadata(
        hf_hub_url(repo, filename, revision=revision, endpoint=endpoint), token=token)
    if meta.size is not None and meta.size != size:
        raise ModelError(f"the hub lists {filename} as {size} bytes but serves {meta.size}",
                         fix="try again later, or set HF_ENDPOINT to another mirror")
    have = part.stat().st_size if part.exists() else 0
    if have > size:  # not a prefix of this file: start over
        part.unlink()
    out = _HashingFile(part)
    try:
        _stream(meta.location, out, size, build_hf_headers(token=token), report, filename)
    finally:
        out.close()
    return out.hexdigest()


def pull(spec: str, *, token: str | None = None, recommended: str | None = None,
         report: Reporter | None = None, endpoint: str | None = None) -> store.Manifest:
    """Download, verify and install the model ``spec`` names; return its manifest.

    ``endpoint`` defaults to ``HF_ENDPOINT`` (``https://huggingface.co`` when unset). Offline
    only when the user set ``HF_HUB_OFFLINE``: the embedding model switching the Hugging Face
    libraries offline in this process (a server's semantic memory) does not stop a pull.
    """
    require("huggingface_hub", extra="models", feature="bastion model pull")
    with hub_online_unless_the_user_said_offline():
        return _pull(spec, token=token, recommended=recommended, report=report,
                     endpoint=endpoint)


def _pull(spec: str, *, token: str | None, recommended: str | None,
          report: Reporter | None, endpoint: str | None) -> store.Manifest:
    from huggingface_hub import HfApi, constants

    repo, selector = parse_spec(spec)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(repo, files_metadata=True)
    except Exception as exc:  # the hub client raises many kinds; each becomes one line
        # from None: the hub's error holds the request and its token
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
                # from None: the hub's error holds the request and its token
                raise _disk_full_error(n, staging, sum(s for s, _ in expected.values())
                                       ) from None
            # from None: the hub's error holds the request and its token
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
        **store.template_facts(target / files[0].name),
    )
    store.write_manifest(manifest)
    shutil.rmtree(staging, ignore_errors=True)
    return manifest
