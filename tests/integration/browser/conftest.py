"""The browser fixtures live in ``fixtures`` (a plugin of the root conftest, shared with
``tests/security/``); the names the tests import are re-exported here."""

from tests.integration.browser.fixtures import SECRET_VAR, TOKEN, BrowserEnv, browser_config

__all__ = ["SECRET_VAR", "TOKEN", "BrowserEnv", "browser_config"]
