"""Turning a running bastion server's JSON error answer into the CLI's one-line error."""

from __future__ import annotations

import httpx

from bastion.errors import AuthError, BastionError, NotFoundError


def raise_for_api_error(resp: httpx.Response, default: type[BastionError]) -> None:
    """Raise the server's ``{"error": {"message", "fix"}}`` as a bastion error if status >= 400.

    401 becomes :class:`AuthError`, 404 :class:`NotFoundError`, anything else ``default``.
    """
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        message, fix = err.get("message", resp.text), err.get("fix")
    except (ValueError, KeyError, TypeError):
        message, fix = resp.text[:200], None
    if fix and message.endswith(f" (fix: {fix})"):  # the server's message carries its fix too
        message = message[: -len(f" (fix: {fix})")]
    cls = {401: AuthError, 404: NotFoundError}.get(resp.status_code, default)
    raise cls(message, fix=fix)
