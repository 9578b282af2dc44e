"""Supervised child processes: how a child died, crash-loop accounting, dying with the parent.

Shared by every place bastion runs native code in a child it restarts (the model workers of
:mod:`bastion.llm.worker`, the llama.cpp server of ``bastion node serve``, the speech engines of
:mod:`bastion.voice.engine`), so they name a crash the same way and stop a crash loop the same
way.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import signal
import sys
import time

CRASH_WINDOW_S = 60.0
CRASH_LIMIT = 3
_ENV_KEEP = {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV",
             "BASTION_HOME", "TERM", "PYTHONHASHSEED", "HF_HUB_OFFLINE",
             "BASTION_MODEL_CACHE", "BASTION_SGEMM_MIN_N", "BASTION_DOT_ROWS"}
_ENV_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "GGML_", "LLAMA_", "CUDA_", "HIP_", "ROCR_", "MKL_",
                 "BASTION_TEST_")


def child_env() -> dict[str, str]:
    """Return the environment for an engine child: locale, paths, thread knobs; no secrets."""
    return {k: v for k, v in os.environ.items()
            if k in _ENV_KEEP or k.startswith(_ENV_PREFIXES)}


def describe_exit(returncode: int) -> str:
    """Return ``signal 11, SIGSEGV`` for a child killed by a signal, else ``exit status N``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"signal {-returncode}, {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


class CrashLoop:
    """Counts crashes in a sliding window; ``record`` says whether the limit is reached.

    Args:
        limit: How many crashes within ``window_s`` make a loop.
        window_s: The window in seconds.

    """

    def __init__(self, limit: int = CRASH_LIMIT, window_s: float = CRASH_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    @property
    def count(self) -> int:
        """Crashes within the window (as of the last :meth:`record`)."""
        return len(self._times)

    def record(self, now: float | None = None) -> bool:
        """Note one crash; return True when ``limit`` crashes fell within the window."""
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return len(self._times) >= self.limit

    def clear(self) -> None:
        """Forget the crashes seen so far."""
        self._times.clear()


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere).

    Call it in the child: first thing in its ``main``, or as ``preexec_fn`` (between fork and
    exec). With ``parent`` (the pid the parent had before starting us), exit at once if that
    parent is already gone.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent:
        os._exit(0)
