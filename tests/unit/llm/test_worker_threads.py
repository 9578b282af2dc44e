"""Each decode step's threads follow the workers busy at that moment (the shared board), and a
pool's worker runs each step on the cores it holds (core leases: never more threads than
cores, whatever the board said a moment before)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from bastion.llm import _threads
from bastion.llm._threads import BusyBoard, CoreLeases, physical_cores, threads_for
from bastion.llm._worker import _thread_plan


def test_the_cores_are_shared_by_the_busy_workers_only() -> None:
    assert threads_for(2, 1, prompt=True) == 2  # a lone conversation: every core
    assert threads_for(2, 1, prompt=False) == 2  # ... for generation too (80 vs 46 tok/s)
    assert threads_for(2, 2, prompt=True) == 1
    assert threads_for(2, 2, prompt=False) == 1  # never below one
    assert threads_for(16, 4, prompt=True) == 4
    assert threads_for(16, 4, prompt=False) == 4
    assert threads_for(8, 0, prompt=True) == 8  # nobody marked yet counts as one
    # hyperthreads: generation gets one thread per physical core of the share
    assert threads_for(16, 1, prompt=False, physical=8) == 8
    assert threads_for(16, 2, prompt=False, physical=8) == 4
    assert threads_for(16, 2, prompt=True, physical=8) == 8


def test_physical_cores_counts_this_machine() -> None:
    n = physical_cores()
    assert 1 <= n <= (os.cpu_count() or 1)


def test_a_worker_sees_what_the_others_mark_on_the_board(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's board mapped twice (as parent and worker do): the worker's thread choice
    changes as soon as another worker marks itself busy or the parent clears a dead one."""
    monkeypatch.setattr(_threads, "physical_cores", lambda: 4)
    board = BusyBoard.create(2)
    try:
        spot = {"fd": board.fd, "index": 0, "size": 2}
        threads, busy, done = _thread_plan({"cores": 4, "board": spot})
        assert threads is not None and busy is not None and done is not None
        busy(True)
        assert board.count() == 1 and threads(True) == 4
        done()
        assert threads(False) == 4
        done()
        board.set(1, True)  # worker 1 got work
        assert board.count() == 2 and threads(True) == 2
        done()
        assert threads(False) == 2
        done()
        board.set(1, False)  # ... and went idle (or died and the parent cleared it)
        assert threads(True) == 4
        done()
        busy(False)
        assert board.count() == 0
    finally:
        board.close()


def test_fixed_threads_stay_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads set by the user (or safe mode) give no cores: the context's own counts hold."""
    monkeypatch.setattr(_threads, "physical_cores", lambda: 3)
    assert _thread_plan({"cores": 0, "board": None}) == (None, None, None)
    threads, busy, done = _thread_plan({"cores": 6, "board": None})  # one worker: no sharing
    assert threads is not None and busy is None and done is None
    assert threads(True) == 6 and threads(False) == 3  # generation: the physical cores


def test_a_board_is_bounded() -> None:
    with pytest.raises(ValueError, match="a board holds"):
        BusyBoard.create(0)


HOLDER = textwrap.dedent("""
    import os, sys, time
    from bastion.llm._threads import CoreLeases
    leases = CoreLeases(int(sys.argv[1]), 2, home=1)
    print(leases.take(1), flush=True)  # its home core, core 1
    sys.stdin.readline()               # hold it until told (or killed)
""")


@contextlib.contextmanager
def _other_worker(board: BusyBoard, want: int) -> Iterator[subprocess.Popen[str]]:
    """Another process (a second worker) that holds ``want`` cores until told or killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER.replace("take(1)", f"take({want})"), str(board.fd)],
        pass_fds=(board.fd,), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == str(want)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)  # reaped, pipes closed


def test_a_step_takes_only_the_cores_no_other_worker_holds() -> None:
    """Another process (a second worker) holds core 1: this worker, which wanted both cores,
    runs on one; when that process dies (a crash), the kernel frees its core."""
    board = BusyBoard.create(2)
    try:
        with _other_worker(board, 1) as holder:
            mine = CoreLeases(board.fd, 2, home=0)
            assert mine.take(2) == 1 and mine.held == [0]  # core 1 is the other worker's
            mine.give_back()
            holder.kill()  # a crash: no give_back
            holder.wait(10)
            assert mine.take(2) == 2  # both free again
            mine.give_back()
            assert mine.held == []
    finally:
        board.close()


def test_a_worker_waits_for_one_core_when_every_core_is_taken() -> None:
    """With both cores held elsewhere, a step waits (blocking) for its home core, never
    running on cores it does not hold."""
    board = BusyBoard.create(2)
    try:
        with _other_worker(board, 2) as other:
            mine = CoreLeases(board.fd, 2, home=0)
            got: list[int] = []
            t = threading.Thread(target=lambda: got.append(mine.take(2)))
            t.start()
            t.join(0.3)
            assert t.is_alive() and not got  # waiting
            assert other.stdin is not None
            other.stdin.write("\n")
            other.stdin.flush()  # the other worker's step ends (its process exits)
            t.join(10)
            assert got and got[0] >= 1
            mine.give_back()
    finally:
        board.close()


def test_a_safe_mode_worker_in_a_pool_still_holds_its_core() -> None:
    """Safe mode (one thread, no thread plan) in a pool with a board: its thread holds a core
    and it marks itself busy, so the other workers never count on that core."""
    board = BusyBoard.create(2)
    try:
        threads, busy, done = _thread_plan({"cores": 0, "board": {"fd": board.fd, "index": 1,
                                                                  "size": 2}})
        assert threads is not None and busy is not None and done is not None
        busy(True)
        assert board.count() == 1
        assert threads(True) == 1  # holds its home core, core 1
        probe = subprocess.run(  # another worker (another process) wanting both cores
            [sys.executable, "-c", "import sys; from bastion.llm._threads import CoreLeases; "
             "c = CoreLeases(int(sys.argv[1]), 2, home=0); print(c.take(2), c.held)",
             str(board.fd)], pass_fds=(board.fd,), capture_output=True, text=True, timeout=30,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, check=True)
        assert probe.stdout.split() == ["1", "[0]"]
        done()
        busy(False)
        assert board.count() == 0
    finally:
        board.close()
