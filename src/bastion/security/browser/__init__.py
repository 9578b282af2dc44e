"""Browser sessions: Playwright driving Debian's chromium in bubblewrap, under bastion's rules.

See :mod:`bastion.security.browser.manager` (sessions), ``_network`` (the browser's only way
out), :mod:`~bastion.security.browser.preauth` (logging in with ``secret://`` credentials) and
:mod:`~bastion.security.browser.rules` (the 16 HITL risk rules and the password-field guard).
"""

from bastion.security.browser.manager import BrowserManager, BrowserSession, BrowserSettings
from bastion.security.browser.preauth import Site
from bastion.security.browser.rules import BrowserGuardStage, browser_conditions, browser_rules

__all__ = ["BrowserGuardStage", "BrowserManager", "BrowserSession", "BrowserSettings", "Site",
           "browser_conditions", "browser_rules"]
