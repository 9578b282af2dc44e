"""The one exception tree.

Every error bastion raises on purpose derives from :class:`BastionError`. Each carries a
one-line ``message`` and, where there is one, a ``fix`` the user can act on. Third-party
errors are mapped to these at the boundary they enter through. Control-flow signals
(approval required, retry) are not errors and live where they are used.
"""

from __future__ import annotations


class BastionError(Exception):
    """Base of all bastion errors: a one-line message plus an optional fix."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def user_text(self) -> str:
        """Return the one-line text shown to a user (message, then the fix)."""
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


class ConfigError(BastionError):
    """The configuration file or a setting is invalid or missing."""


class MissingExtraError(BastionError):
    """An optional feature was used without its extra installed."""

    def __init__(self, feature: str, extra: str, module: str) -> None:
        super().__init__(
            f"{feature} needs the optional package '{module}'",
            fix=f"pip install 'bastion[{extra}]'",
        )
        self.extra = extra


class BrokenExtraError(BastionError):
    """An optional package is installed but fails to import (a native library that won't load).

    A package built for another machine (a venv copied from an x86 box to an ARM one), a
    damaged install or a missing system library: its import raises ``OSError`` or
    ``RuntimeError`` from the dynamic loader. One line with the loader's reason and the fix.
    """

    def __init__(self, feature: str, module: str, reason: str, fix: str) -> None:
        super().__init__(f"{feature} cannot load its package '{module}': {reason}", fix=fix)
        self.module = module


class ModelError(BastionError):
    """A model backend failed (unreachable, unknown model, bad response)."""


class ModelOutputError(ModelError):
    """The model produced output that could not be parsed even after repair."""


class ModelHTTPError(ModelError):
    """The model server answered with an HTTP error status (``status_code``, ``body``)."""

    def __init__(self, message: str, *, status_code: int, body: str = "",
                 fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.status_code = status_code
        self.body = body


class ModelUnreachable(ModelError):
    """The model server could not be reached, or the connection to it was lost."""


class ModelTimeout(ModelError):
    """The model server did not answer in time."""


class ToolError(BastionError):
    """A tool failed while running; the message goes back to the model."""


class ToolNotFoundError(ToolError):
    """The model asked for a tool that does not exist."""


class ToolArgumentsError(ToolError):
    """The arguments of a tool call did not validate against the tool's schema."""


class PolicyDenied(BastionError):
    """The gateway refused a tool call (policy, approval, sandbox unavailable)."""


class SandboxError(BastionError):
    """A sandbox could not be started or is not available on this machine."""


class SecretError(BastionError):
    """A secret backend failed or a secret reference could not be resolved."""


class AuditError(BastionError):
    """The audit log could not be written, read or verified."""


class AuthError(BastionError):
    """A request carried no token or a wrong one."""


class NotFoundError(BastionError):
    """A named thing (a model, a session, a record) does not exist."""


class MemoryStoreError(BastionError):
    """The conversation store or the vector store failed."""


class ClusterError(BastionError):
    """No node could serve a request."""


class AudioError(BastionError):
    """Audio input was invalid or no audio device is available."""


class CryptoError(BastionError):
    """A key, token (HSM), share, proof or pinned certificate failed a cryptographic check."""


class SealedError(CryptoError):
    """Sealed key material was needed but bastion has not been unsealed."""
