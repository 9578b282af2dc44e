"""Small models whose weights have no batched CPU kernel are converted once to Q8_0 and cached.

Why: llama.cpp multiplies a batch of tokens (a prompt, or one token of each of several
conversations) with a batched GEMM kernel only for some weight types: llamafile's sgemm
(F32/F16/BF16, Q8_0, Q4_0, Q5_0, IQ4_NL) and the CPU repack buffers (Q4_0, Q4_K, IQ4_NL). The
legacy ``*_1`` types (Q4_1, Q5_1) have none on other CPUs than AMX ones (llama.cpp's AMX kernels
batch Q4_1 when weights are repacked: there it stays as it is): every row of a batch is a
separate dot product, so a step of 4 sequences costs ~3x a step of one, and prompts are slow. The
shipped SmolLM2-135M is Q4_1. Measured on this 2-core machine (2 threads, one context with 4
sequences; the numbers are in the README's model section): Q4_1 prompt of 200 tokens ~930 ms,
4 sequences 1.33x the tokens/s of one; the same weights converted to Q8_0: ~430 ms, 1.62x.

Q8_0 rather than Q4_0 (which batches even better): Q4_1 -> Q8_0 is near-lossless (Q8_0's
rounding step is ~1/17 of Q4_1's, so the converted weights are the Q4_1 values to within a
small fraction of their own error), while Q4_1 -> Q4_0 rounds a second time to 4 bits. The
converted file is ~1.5x larger, which is why only small models are converted: for a large
model decoding is bound by memory bandwidth, and 1.5x more bytes per token would cost more
than batching gains (and memory it may not have). The conversion is llama.cpp's own quantizer
(``llama_model_quantize``, ``allow_requantize``), run in a child process: it is native code,
and a crash in it must cost a clear error, never bastion.

The converted file is cached in ``<home>/models/.converted/`` (0700; files 0600; or in
``$BASTION_MODEL_CACHE``, which must be private too), named by the
source file's SHA-256, written to a temporary name and renamed into place (atomic), with a
sidecar ``.json`` recording the source SHA-256 and the converted file's SHA-256, size and mtime;
loading compares size and mtime (one ``stat``, as the model store does) and converts again if
they differ. ``model.convert: off`` loads the file as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.config.paths import write_private
from bastion.errors import ModelError
from bastion.llm._cache import private_cache_dir as cache_dir  # (also the probe verdicts')

#: llama.cpp file types (``general.file_type``) with no batched CPU matmul kernel.
NO_BATCHED_KERNEL = {3: "q4_1", 9: "q5_1"}  # LLAMA_FTYPE_MOSTLY_Q4_1, _Q5_1
#: ... of which llama.cpp's AMX kernels (repacked weights on a CPU with AMX) batch these
#: (ggml-cpu/amx/common.h ``qtype_has_amx_kernels``). Measured on an AMX Xeon, 2 threads:
#: Q4_1 there decodes 1 sequence at 173 tokens/s and 4 at 288, its Q8_0 copy 126 and 262.
AMX_BATCHED = {3}
TARGET_NAME, TARGET_FTYPE = "q8_0", 7  # LLAMA_FTYPE_MOSTLY_Q8_0
#: Sources above this size are loaded as they are (decoding them is bound by memory bandwidth).
MAX_SOURCE_BYTES = 1 << 30
GROWTH = 2  # the converted file is at most this many times the source (Q4_1 -> Q8_0: ~1.5x)
CONVERT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Choice:
    """Which file the embedded model loads, and why (shown by ``bastion init``/``doctor``)."""

    path: Path
    weights: str  # the source's weight type ("q4_1", "q8_0", ... or "other")
    converted: bool
    reason: str


def weights_name(file_type: int | None) -> str:
    """Return a llama.cpp file type's short name (``general.file_type``), e.g. 3 -> ``q4_1``."""
    if file_type is None:
        return "unknown"
    try:
        from llama_cpp import llama_cpp as C
    except ImportError:  # pragma: no cover - the embedded model needs llama_cpp anyway
        return f"type {file_type}"
    for name in dir(C):
        if name.startswith("LLAMA_FTYPE_") and getattr(C, name) == file_type:
            return name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").lower()
    return f"type {file_type}"


def decide(file_type: int | None, size: int, *, mode: str, n_gpu_layers: int,
           available: int | None, free_disk: int | None,
           amx: bool = False) -> tuple[bool, str]:
    """Whether to convert a source of ``file_type`` and ``size`` bytes; the reason, one line.

    ``amx``: the weights load repacked for llama.cpp's AMX kernels (an AMX CPU, repacking on).
    """
    kind = weights_name(file_type)
    if mode == "off":
        return False, f"{kind} weights loaded as they are (model.convert off)"
    if file_type not in NO_BATCHED_KERNEL:
        return False, f"{kind} weights loaded as they are (llama.cpp batches them)"
    if amx and file_type in AMX_BATCHED:
        return False, (f"{kind} weights loaded as they are (llama.cpp's AMX kernels batch "
                       "them on this CPU, faster than a q8_0 copy)")
    if n_gpu_layers:
        return False, f"{kind} weights loaded as they are (GPU offload has batched kernels)"
    if size > MAX_SOURCE_BYTES:
        return False, (f"{kind} weights loaded as they are: the file is too large to convert "
                       f"(over {MAX_SOURCE_BYTES >> 20} MiB, decoding is memory-bound)")
    if available is not None and size * GROWTH * 4 > available:
        return False, f"{kind} weights loaded as they are (not enough memory for a Q8_0 copy)"
    if free_disk is not None and size * GROWTH > free_disk:
        return False, f"{kind} weights loaded as they are (not enough disk for a Q8_0 copy)"
    return True, (f"{kind} weights converted once to q8_0 (near-lossless; llama.cpp has no "
                  f"batched CPU kernel for {kind}: several conversations at once and prompts "
                  "are faster)")


def source_sha256(path: Path) -> str:
    """Return the source file's SHA-256 (:func:`bastion.llm.store.identify`).

    Unmanaged files are hashed once per size and mtime into the cache folder's
    ``sources.json``, so one cache shared by several homes hashes each source once.
    """
    from bastion.llm.store import identify

    return identify(path, cache_dir() / "sources.json")


def _meta_ok(out: Path, meta: Path, source_sha: str) -> dict[str, Any] | None:
    try:
        m = json.loads(meta.read_text())
        st = out.stat()
    except (OSError, ValueError):
        return None
    if (isinstance(m, dict) and m.get("source_sha256") == source_sha
            and m.get("size") == st.st_size and m.get("mtime_ns") == st.st_mtime_ns):
        return m
    return None


def converted_file(src: Path, source_sha: str) -> tuple[Path, str]:
    """Return the cached Q8_0 copy of ``src`` (converting it first when missing or changed).

    Returns the path and the converted file's SHA-256.
    """
    from bastion.llm.store import sha256_file

    d = cache_dir()
    out = d / f"{source_sha}.{TARGET_NAME}.gguf"
    meta = out.with_suffix(".json")
    hit = _meta_ok(out, meta, source_sha)
    if hit is not None:
        return out, str(hit["sha256"])
    fd, tmp_name = tempfile.mkstemp(dir=d, prefix=".convert-", suffix=".gguf")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _run_quantizer(src, tmp)
        tmp.chmod(0o600)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        sha = sha256_file(tmp)
        tmp.replace(out)
        st = out.stat()
        record = {"source_sha256": source_sha, "source": src.name, "type": TARGET_NAME,
                  "sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        write_private(meta, json.dumps(record))  # two converters at once: the last one wins
        return out, sha
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _run_quantizer(src: Path, dst: Path, ftype: int = TARGET_FTYPE) -> None:
    """Run llama.cpp's quantizer in a child process (native code: a crash is an error here)."""
    from bastion._proc import child_env, describe_exit

    try:
        done = subprocess.run(  # noqa: S603 - our own module, argv is fixed
            [sys.executable, "-m", "bastion.llm.convert", str(src), str(dst), str(ftype)],
            env=child_env(), capture_output=True, timeout=CONVERT_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"converting {src.name} to q8_0 took over {CONVERT_TIMEOUT_S:g} s",
                         fix="bastion config set model.convert off") from exc
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise ModelError(
            f"converting {src.name} to q8_0 failed ({describe_exit(done.returncode)}) "
            f"{tail[0][:200]}".strip(),
            fix="bastion config set model.convert off (loads the file as it is)")


def cached_copy(source_sha: str) -> dict[str, Any] | None:
    """Return the sidecar record of ``source_sha``'s converted copy when it is in the cache."""
    with contextlib.suppress(ModelError, OSError):
        out = cache_dir() / f"{source_sha}.{TARGET_NAME}.gguf"
        return _meta_ok(out, out.with_suffix(".json"), source_sha)
    return None


def prepare(path: Path, file_type: int | None, *, mode: str = "auto",
            n_gpu_layers: int = 0, amx: bool = False) -> Choice:
    """Decide for ``path`` (weights of ``file_type``) and return the file to load.

    ``amx``: as :func:`decide`'s.

    A conversion that cannot be made (the cache is not private, the quantizer failed, the
    disk is full) loads the source as it is; the reason says why (``bastion doctor`` shows it).
    """
    from bastion.hardware.memory import room

    size = path.stat().st_size
    kind = weights_name(file_type)
    convert, reason = decide(file_type, size, mode=mode, n_gpu_layers=n_gpu_layers,
                             available=getattr(room(), "bytes", None), free_disk=None,
                             amx=amx)
    if not convert:  # (the cache folder is not touched)
        return Choice(path, kind, False, reason)
    try:
        try:
            free_disk: int | None = shutil.disk_usage(cache_dir()).free
        except OSError:
            free_disk = None
        convert, reason = decide(file_type, size, mode=mode, n_gpu_layers=n_gpu_layers,
                                 available=None, free_disk=free_disk, amx=amx)
        if not convert:
            return Choice(path, kind, False, reason)
        out, _ = converted_file(path, source_sha256(path))
    except ModelError as exc:
        return Choice(path, kind, False, f"{kind} weights loaded as they are: {exc.message} "
                      f"(fix: {exc.fix})")
    except OSError as exc:  # the cache folder's disk: full, read-only, gone mid-way
        return Choice(path, kind, False, f"{kind} weights loaded as they are: the converted "
                      f"copy could not be written ({exc.strerror or exc}) (fix: free disk "
                      "space in the cache folder, or bastion config set model.convert off)")
    return Choice(out, kind, True, reason)


def main(argv: list[str]) -> int:
    """``python -m bastion.llm.convert SRC DST FTYPE``: llama.cpp's quantizer, SRC to DST."""
    from bastion._proc import die_with_parent

    die_with_parent()
    from llama_cpp import llama_cpp as C

    src, dst, ftype = argv
    params = C.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.allow_requantize = True
    params.nthread = 0  # all cores
    rc = int(C.llama_model_quantize(src.encode(), dst.encode(), params))
    if rc != 0:
        print(f"llama_model_quantize returned {rc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
