"""The API token rule every server that takes it applies at start (serve, mcp, gateway)."""

from __future__ import annotations

from pydantic import SecretStr

from bastion.errors import ConfigError

MIN_TOKEN_CHARS = 32
NEW_TOKEN_FIX = ("bastion config set api.token \"$(python3 -c "
                 "'import secrets; print(secrets.token_urlsafe(32))')\"")


def token_problem(token: SecretStr | None) -> str | None:
    """Return why ``token`` cannot guard a server (``None`` when it can)."""
    if token is None:
        return "no API token is configured"
    value = token.get_secret_value()
    if not value.strip():
        return "api.token is empty"
    if len(value) < MIN_TOKEN_CHARS:
        return f"api.token has {len(value)} characters; at least {MIN_TOKEN_CHARS} are needed"
    return None


def serving_token(token: SecretStr | None, command: str) -> str:
    """Return the token's value, or raise a one-line :class:`ConfigError` naming the fix.

    An empty token (``BASTION_API__TOKEN=``) would match an empty ``?token=``, and a short
    one can be guessed, so ``command`` refuses to start with either.
    """
    problem = token_problem(token)
    if problem is not None:
        raise ConfigError(f"{problem}, so {command} will not start",
                          fix="bastion init" if token is None else NEW_TOKEN_FIX)
    assert token is not None
    return token.get_secret_value()
