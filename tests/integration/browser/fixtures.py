"""One local web site and one bastion app with real chromium per test session (one browser).

A plugin of the root conftest (``pytest_plugins``), so the browser tests here and the browser
breach tests in ``tests/security/`` share the same site, app and chromium.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from tests.integration.browser.site import PASSWORD, USER, Site

if TYPE_CHECKING:  # imported when used: every test run loads this plugin
    from bastion.app import App
    from bastion.config.model import Config
    from tests.unit.security.test_gateway_pipeline import CountingApprover

SECRET_VAR = "BASTION_SECRET_TESTSITE_LOGIN"  # secret://env/testsite_login
TOKEN = "tok-browser-test-0123456789"


def need_browser() -> None:
    """Skip outside CI, fail in CI, when the browser extra or chromium is missing."""
    from bastion.security.browser._launch import find_chromium

    problems = []
    if importlib.util.find_spec("playwright") is None:
        problems.append("pip install 'bastion[browser]'")
    if find_chromium() is None:
        problems.append("apt install chromium")
    if problems:
        msg = "browser tests need: " + ", ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


def browser_config(site: Site, **browser: object) -> Config:
    """Return a config with the browser on and its egress limited to ``site``."""
    from bastion.config.model import (
        ApiConfig,
        BrowserConfig,
        BrowserSiteConfig,
        Config,
        EgressConfig,
        MemoryConfig,
    )

    config = Config(memory=MemoryConfig(enabled=False), api=ApiConfig(token=TOKEN),
                    browser=BrowserConfig(
        enabled=True,
        # 127.0.0.1 for most tests; the pre-authenticated site is the same server as localhost
        egress=EgressConfig(domains=["localhost"], cidrs=["127.0.0.1/32", "::1/128"],
                            ports=[site.port]),
        sites=[BrowserSiteConfig(
            name="testsite", domains=["localhost"], login_url=f"{site.auth_url}/login",
            username=USER, password="secret://env/testsite_login")],
        **browser))  # type: ignore[arg-type]
    config.intelligence.enabled = False  # its anomaly/trust stages are not what is tested here
    return config


class BrowserEnv:
    def __init__(self, app: App, site: Site, approver: CountingApprover, home: Path) -> None:
        self.app, self.site, self.approver, self.home = app, site, approver, home


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def env(site: Site, tmp_path_factory: pytest.TempPathFactory
              ) -> AsyncIterator[BrowserEnv]:
    from bastion.app import build_app
    from bastion.testing import ScriptedModel
    from tests.unit.security.test_gateway_pipeline import CountingApprover

    need_browser()
    home = tmp_path_factory.mktemp("browser-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BASTION_HOME", str(home))
        mp.setenv(SECRET_VAR, PASSWORD)
        approver = CountingApprover(True)
        app = build_app(browser_config(site), model=ScriptedModel(), approver=approver)
        assert app.browser is not None
        yield BrowserEnv(app, site, approver, home)
        await app.aclose()
