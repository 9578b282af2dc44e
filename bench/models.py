"""``bastion model pull`` and ``verify`` speed against same-run baselines.

(a) pull: :func:`bastion.llm.pull.pull` (metadata, download, SHA-256 check, manifest) of the
    shipped GGUF from the local hub (``tests/fakes/hub.py``, in its own process) vs a plain
    ``huggingface_hub.hf_hub_download`` of the same file from the same hub, alternating per
    round, each into a fresh folder. Printed: MB/s of each (median) and the ratio pull/plain
    (issue #17 asks >= 0.9; pull also hashes the file, which the plain download does not).
(b) verify: :func:`bastion.llm.store.sha256_file` vs ``sha256sum`` on the same (cached) file
    of ~500 MB, alternating: GB/s of each and the ratio ours/sha256sum.

    .venv/bin/python bench/models.py [--rounds 5] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("TRANSFORMERS_OFFLINE", None)
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

from bastion.llm import store  # noqa: E402
from bastion.llm.embedded import shipped_model_path  # noqa: E402
from bastion.llm.pull import pull  # noqa: E402

REPO = "bench/SmolLM2-GGUF"


class _Hub:
    url = ""


@contextlib.contextmanager
def _hub_process(src: Path) -> Iterator[_Hub]:
    """The local hub in its own process, as a real hub is another machine: its serving
    thread then does not compete for this process's GIL with the client under test."""
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from pathlib import Path; from tests.fakes.hub import FakeHub, Repo;"
            "hub = FakeHub({sys.argv[2]: Repo({Path(sys.argv[3]).name: Path(sys.argv[3])})});"
            "hub.__enter__(); print(hub.url, flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT), REPO, str(src)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        hub = _Hub()
        hub.url = (proc.stdout.readline() if proc.stdout else "").strip()
        if not hub.url:
            sys.exit("the local hub did not start")
        yield hub
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(10)


@contextlib.contextmanager
def _no_hashing(sha: str) -> Iterator[None]:
    """Attribution only: pull with the SHA-256 switched off (the digest it would compute is
    given), to see how much of the gap to the plain download is the hash."""
    from bastion.llm import pull as pull_mod

    real = pull_mod._HashingFile

    class _Plain(real):  # type: ignore[misc,valid-type]
        def __init__(self, path: Path) -> None:
            self.path = path
            self.f = path.open("ab")

        def write(self, data: bytes) -> int:
            return self.f.write(data)

        def hexdigest(self) -> str:
            return sha

        def tell(self) -> int:
            return self.f.tell()

        def truncate(self, size: int = 0) -> int:
            return self.f.truncate(size)

        def close(self) -> None:
            self.f.close()

    pull_mod._HashingFile = _Plain  # type: ignore[misc]
    try:
        yield
    finally:
        pull_mod._HashingFile = real  # type: ignore[misc]


def bench_pull(rounds: int, where: str | None) -> dict[str, float]:
    """Return the median MB/s of bastion's pull, of a plain hf_hub_download and of a pull with
    its hashing switched off (attribution), alternating the order each round."""
    from huggingface_hub import hf_hub_download

    src = shipped_model_path()
    size = src.stat().st_size
    sha = store.sha256_file(src)
    rates: dict[str, list[float]] = {"ours": [], "plain": [], "nohash": []}
    with _hub_process(src) as hub, tempfile.TemporaryDirectory(dir=where) as tmp:
        for i in range(rounds):
            order = list(rates) if i % 2 == 0 else list(rates)[::-1]
            for which in order:
                folder = Path(tmp) / f"{which}-{i}"
                t0 = time.perf_counter()
                if which == "plain":
                    hf_hub_download(REPO, src.name, local_dir=folder, endpoint=hub.url)
                else:
                    os.environ["BASTION_HOME"] = str(folder)
                    with _no_hashing(sha) if which == "nohash" else contextlib.nullcontext():
                        pull(f"{REPO}:{src.name}", endpoint=hub.url)
                rates[which].append(size / (time.perf_counter() - t0) / 1e6)
                shutil.rmtree(folder)
    return {k: statistics.median(v) for k, v in rates.items()}


def bench_verify(rounds: int, where: str | None) -> tuple[float, float]:
    """Return the median GB/s of store.sha256_file and of sha256sum on a ~500 MB file.

    The file is the shipped GGUF five times over, so sha256sum's process start is amortised.
    """
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        src = Path(tmp) / "big.gguf"
        data = shipped_model_path().read_bytes()
        with src.open("wb") as f:
            for _ in range(5):
                f.write(data)
        return _verify(src, rounds)


def _verify(src: Path, rounds: int) -> tuple[float, float]:
    size = src.stat().st_size
    store.sha256_file(src)  # warm the page cache for both
    ours: list[float] = []
    tool: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        a = store.sha256_file(src)
        ours.append(size / (time.perf_counter() - t0) / 1e9)
        t0 = time.perf_counter()
        b = subprocess.run(["sha256sum", str(src)], capture_output=True, text=True,
                           check=True).stdout.split()[0]
        tool.append(size / (time.perf_counter() - t0) / 1e9)
        assert a == b
    return statistics.median(ours), statistics.median(tool)


def main() -> None:
    """Run both benchmarks and print the figures and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None,
                    help="where both downloads go (default: the temp dir; /dev/shm takes the "
                         "disk out of the comparison)")
    args = ap.parse_args()
    r = bench_pull(args.rounds, args.dir)
    print(f"pull   bastion {r['ours']:7.1f} MB/s   hf_hub_download {r['plain']:7.1f} MB/s   "
          f"ratio {r['ours'] / r['plain']:.2f} (target >= 0.9)")
    print(f"       without its SHA-256 (attribution) {r['nohash']:7.1f} MB/s   ratio "
          f"{r['nohash'] / r['plain']:.2f} (the difference to the line above is the hash)")
    v, s = bench_verify(args.rounds, args.dir)
    print(f"verify bastion {v:7.2f} GB/s   sha256sum       {s:7.2f} GB/s   "
          f"ratio {v / s:.2f}")


if __name__ == "__main__":
    main()
