"""The worker's protocol stream: text pieces held briefly, everything else at once, in order."""

from __future__ import annotations

import io
import json

import pytest

from bastion.llm import _worker
from bastion.llm._worker import PIECE_FLUSH_S, _Out


class _Pipe(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes.append(bytes(data))
        return len(data)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(_worker.time, "monotonic", lambda: now[0])
    return now


def _lines(data: bytes) -> list[dict[str, object]]:
    return [json.loads(x) for x in data.splitlines()]


def test_held_pieces_wait_until_old_enough_then_go_in_one_write(clock: list[float]) -> None:
    pipe = _Pipe()
    out = _Out(pipe)
    out.later({"id": 1, "t": "a"})
    clock[0] += PIECE_FLUSH_S / 2
    out.later({"id": 1, "t": "b"})
    out.flush()
    assert pipe.writes == []  # the oldest is not old enough yet
    clock[0] += PIECE_FLUSH_S / 2
    out.flush()
    assert len(pipe.writes) == 1 and _lines(pipe.writes[0]) == [{"id": 1, "t": "a"},
                                                                 {"id": 1, "t": "b"}]
    out.flush()
    assert len(pipe.writes) == 1  # nothing held: nothing written


def test_a_message_sent_now_carries_the_held_ones_before_it(clock: list[float]) -> None:
    pipe = _Pipe()
    out = _Out(pipe)
    out.later({"id": 1, "t": "a"})
    out.send({"id": 1, "finish": "stop"})
    assert len(pipe.writes) == 1
    assert _lines(pipe.writes[0]) == [{"id": 1, "t": "a"}, {"id": 1, "finish": "stop"}]


def test_flush_all_held_writes_at_once(clock: list[float]) -> None:
    pipe = _Pipe()
    out = _Out(pipe)
    out.later({"id": 2, "t": "x"})
    out.flush(all_held=True)
    assert _lines(pipe.writes[0]) == [{"id": 2, "t": "x"}]
