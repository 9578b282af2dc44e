"""Each decode step's threads follow the workers busy at that moment (the shared board)."""

from __future__ import annotations

import pytest

from bastion.llm._threads import BusyBoard, threads_for
from bastion.llm._worker import _thread_plan


def test_the_cores_are_shared_by_the_busy_workers_only() -> None:
    assert threads_for(2, 1, prompt=True) == 2  # a lone conversation: every core
    assert threads_for(2, 1, prompt=False) == 1  # generation: half, as llama.cpp's default
    assert threads_for(2, 2, prompt=True) == 1
    assert threads_for(2, 2, prompt=False) == 1  # never below one
    assert threads_for(16, 4, prompt=True) == 4
    assert threads_for(16, 4, prompt=False) == 2
    assert threads_for(8, 0, prompt=True) == 8  # nobody marked yet counts as one


def test_a_worker_sees_what_the_others_mark_on_the_board() -> None:
    """The pool's board mapped twice (as parent and worker do): the worker's thread choice
    changes as soon as another worker marks itself busy or the parent clears a dead one."""
    board = BusyBoard.create(2)
    try:
        spot = {"fd": board.fd, "index": 0, "size": 2}
        threads, busy = _thread_plan({"cores": 4, "board": spot})
        assert threads is not None and busy is not None
        busy(True)
        assert board.count() == 1 and threads(True) == 4 and threads(False) == 2
        board.set(1, True)  # worker 1 got work
        assert board.count() == 2 and threads(True) == 2 and threads(False) == 1
        board.set(1, False)  # ... and went idle (or died and the parent cleared it)
        assert threads(True) == 4
        busy(False)
        assert board.count() == 0
    finally:
        board.close()


def test_fixed_threads_stay_fixed() -> None:
    """Threads set by the user (or safe mode) give no cores: the context's own counts hold."""
    assert _thread_plan({"cores": 0, "board": None}) == (None, None)
    threads, busy = _thread_plan({"cores": 6, "board": None})  # one worker: nobody to share with
    assert threads is not None and busy is None and threads(True) == 6 and threads(False) == 3


def test_a_board_is_bounded() -> None:
    with pytest.raises(ValueError, match="a board holds"):
        BusyBoard.create(0)
