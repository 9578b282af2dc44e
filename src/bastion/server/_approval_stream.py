"""A turn's events with its session's approval events merged in, while the agent waits.

Used by the streaming turn (``_turns``) and re-exported by the approvals route; it lives here
so that neither imports the other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any, TypeVar, cast

from bastion.security.hitl.manager import ApprovalManager

T = TypeVar("T")


async def with_approvals(manager: ApprovalManager | None, session_id: str,
                         source: AsyncIterable[T]) -> AsyncGenerator[T | dict[str, Any], None]:
    """Yield ``source``'s items, plus this session's approval events while it waits.

    The agent is iterated inline (as without approvals) except while tool calls it announced
    are running: only then can it wait for an approval, so only then is its next step run as
    a task beside the approval-event subscription.
    """
    from bastion.agent.events import ToolFinished, ToolStarted

    it = aiter(source)
    running = 0
    events: AsyncGenerator[dict[str, Any], None] | None = None
    nxt: asyncio.Future[Any] | None = None
    ev: asyncio.Future[Any] | None = None
    try:
        while True:
            if manager is None or running <= 0:
                try:
                    value = await anext(it)
                except StopAsyncIteration:
                    return
            else:
                if events is None:
                    events = cast(AsyncGenerator[dict[str, Any], None], manager.events())
                if ev is None:
                    ev = asyncio.ensure_future(anext(events))
                nxt = asyncio.ensure_future(anext(it))
                while True:
                    done, _ = await asyncio.wait({nxt, ev}, return_when=asyncio.FIRST_COMPLETED)
                    if ev in done:
                        item = ev.result()
                        ev = asyncio.ensure_future(anext(events))
                        if item.get("session_id") == session_id:
                            yield item
                    if nxt in done:
                        break
                try:
                    value = nxt.result()
                except StopAsyncIteration:
                    return
                finally:
                    nxt = None
            if isinstance(value, ToolStarted):
                running += 1
            elif isinstance(value, ToolFinished):
                running -= 1
            yield value
    finally:
        for fut in (nxt, ev):
            if fut is not None and not fut.done():
                fut.cancel()
                with contextlib.suppress(BaseException):
                    await fut
        if events is not None:
            with contextlib.suppress(BaseException):
                await events.aclose()
