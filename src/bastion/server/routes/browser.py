"""``/v1/browser/sessions``: the open browser sessions of this server, and closing one."""

from __future__ import annotations

from fastapi import APIRouter

from bastion.errors import NotFoundError
from bastion.server.contract import errors
from bastion.server.deps import BastionApp
from bastion.server.responses import BrowserClosed, BrowserSessions

router = APIRouter(prefix="/v1/browser", tags=["browser"])


@router.get("/sessions", summary="List the open browser sessions")
async def sessions(app: BastionApp) -> BrowserSessions:
    """Return each session's page, action count, idle time and logged-in sites."""
    manager = app.browser
    if manager is None:
        return BrowserSessions(enabled=False, sandboxed=None, sessions=[])
    await manager.expire()  # idle/used-up sessions are closed before they are listed
    return BrowserSessions(enabled=True, sandboxed=manager.sandboxed,
                           sandbox_problem=manager.sandbox_problem, sessions=manager.sessions())


@router.delete("/sessions/{session_id}", summary="Close one browser session",
               responses=errors(404))
async def close(session_id: str, app: BastionApp) -> BrowserClosed:
    """Close the session's browser context (cookies, logins and pages go with it)."""
    if app.browser is None or not await app.browser.close(session_id):
        raise NotFoundError(f"no open browser session {session_id!r}",
                            fix="bastion browser sessions")
    return BrowserClosed(closed=session_id)
