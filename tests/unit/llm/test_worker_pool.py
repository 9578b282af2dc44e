"""How many model worker processes serve the slots, and how the slots are split over them."""

from __future__ import annotations

from bastion.llm.worker import _shares, auto_workers

GIB = 1 << 30


def test_one_worker_per_core_up_to_the_slots() -> None:
    assert auto_workers(4, 100 << 20, cores=2, available=16 * GIB) == 2
    assert auto_workers(2, 100 << 20, cores=16, available=16 * GIB) == 2
    assert auto_workers(1, 100 << 20, cores=16, available=16 * GIB) == 1


def test_fewer_workers_where_the_model_copies_would_not_fit_in_half_the_memory() -> None:
    assert auto_workers(8, 5 * GIB, cores=8, available=32 * GIB) == 3  # 3 x 5 <= 16
    assert auto_workers(8, 40 * GIB, cores=8, available=32 * GIB) == 1  # never fewer than one


def test_slots_are_split_evenly() -> None:
    assert _shares(4, 2) == [2, 2]
    assert _shares(3, 2) == [2, 1]
    assert _shares(5, 3) == [2, 2, 1]
    assert sum(_shares(7, 4)) == 7


def test_messages_that_arrive_together_wake_the_caller_once_and_keep_their_order() -> None:
    import asyncio
    import threading

    from bastion.llm.worker import _Sink

    async def main() -> tuple[int, list[object]]:
        sink = _Sink()
        wakes = 0
        inner = sink._wake

        def counted() -> None:
            nonlocal wakes
            wakes += 1
            inner()

        sink._wake = counted  # type: ignore[method-assign]
        reader = threading.Thread(target=lambda: [sink.push({"n": i}) for i in range(3)])
        reader.start()
        reader.join()  # three messages in before the loop runs again: one wake-up for all
        await asyncio.sleep(0.01)
        got = [await sink.get() for _ in range(3)]
        threading.Thread(target=sink.push, args=(None,)).start()  # a later one: woken again
        got.append(await asyncio.wait_for(sink.get(), 5))
        return wakes, got

    wakes, got = asyncio.run(main())
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}, None]
    assert wakes == 2
