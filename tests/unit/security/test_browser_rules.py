"""Browser risk rules, the password-field guard and snapshot parsing (logic only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.messages import ToolCall
from bastion.security.browser._snapshot import Element, mask, parse
from bastion.security.browser.rules import BrowserGuardStage, browser_conditions, browser_rules
from bastion.security.gateway import CallRequest, ToolResult
from bastion.security.hitl.risk import RiskClassifier
from bastion.tools.base import Risk
from bastion.tools.builtin.browser import browser_tools

TOOLS = {t.name: t for t in browser_tools()}


class FakeSessions:
    def __init__(self, elements: dict[str, Element], url: str = "https://shop.test/cart") -> None:
        self.elements, self.url, self.hosts = elements, url, {"shop.test"}

    def element(self, sid: str | None, ref: str) -> Element | None:
        return self.elements.get(ref)

    def current_url(self, sid: str | None) -> str | None:
        return self.url

    def visited(self, sid: str | None) -> set[str]:
        return self.hosts


def el(ref: str, role: str, label: str, **facts: Any) -> Element:
    if "field" in facts:
        facts["name"] = facts.pop("field")
    return Element(ref, role, label, facts)


ELEMENTS = {
    "e1": el("e1", "button", "Delete account", tag="button", submits=True, form_method="post"),
    "e2": el("e2", "button", "Place order", tag="button"),
    "e3": el("e3", "button", "Sign in", tag="button", submits=True, form_method="post"),
    "e4": el("e4", "link", "Docs", tag="a", href="https://shop.test/docs"),
    "e5": el("e5", "link", "Partner", tag="a", href="https://other.test/"),
    "e6": el("e6", "link", "Get the app", tag="a", href="https://shop.test/app.exe"),
    "e7": el("e7", "button", "Search", tag="button", submits=True, form_method="get"),
    "e8": el("e8", "textbox", "IBAN", tag="input", type="text", field="iban"),
    "e9": el("e9", "textbox", "Password", tag="input", type="password", field="pw"),
    "e10": el("e10", "textbox", "Code", tag="input", autocomplete="one-time-code"),
    "e11": el("e11", "textbox", "Card number", tag="input", field="number"),
    "e12": el("e12", "textbox", "Search", tag="input", type="search", field="q"),
    "e13": el("e13", "button", "Send message", tag="button"),
    "e14": el("e14", "button", "Confirm", tag="button"),
    "e15": el("e15", "textbox", "Date of birth", tag="input", field="dob"),
    "e16": el("e16", "link", "Export", tag="a", href="https://shop.test/x", download=True),
    "e17": el("e17", "button", "Generate API key", tag="button"),
}


def classify(tool: str, secret: str = "", **args: Any) -> tuple[Risk, list[str]]:
    sessions = FakeSessions(ELEMENTS)
    clf = RiskClassifier(browser_rules(), Path("/tmp"), conditions=browser_conditions(
        sessions, is_secret=lambda text: bool(secret) and secret in text))
    risk, _reasons, names, _ctx = clf.classify(TOOLS[tool], args, "s1")
    return risk, names


def test_there_are_sixteen_rules_with_conditions() -> None:
    rules = browser_rules()
    conditions = browser_conditions(FakeSessions({}))
    assert len(rules) == 16 and len({r.name for r in rules}) == 16
    assert {r.when for r in rules} == set(conditions)


@pytest.mark.parametrize(("ref", "level", "rule"), [
    ("e1", Risk.CRITICAL, "browser-click-destructive"),
    ("e2", Risk.CRITICAL, "browser-click-payment"),
    ("e5", Risk.MEDIUM, "browser-click-external-link"),
    ("e6", Risk.HIGH, "browser-click-download"),
    ("e7", Risk.MEDIUM, "browser-click-form-submit"),
    ("e13", Risk.HIGH, "browser-click-send"),
    ("e14", Risk.HIGH, "browser-click-confirm"),
    ("e16", Risk.HIGH, "browser-click-download"),
    ("e17", Risk.HIGH, "browser-click-account-security"),
])
def test_clicks_are_classified_by_the_element(ref: str, level: Risk, rule: str) -> None:
    risk, names = classify("browser_click", ref=ref)
    assert risk == level and rule in names


def test_harmless_clicks_stay_low_and_sign_in_is_not_a_confirmation() -> None:
    assert classify("browser_click", ref="e4") == (Risk.LOW, [])
    risk, names = classify("browser_click", ref="e3")  # a POST login form: HIGH, not "sign"
    assert "browser-click-confirm" not in names and "browser-click-post-form" in names
    assert classify("browser_click", ref="e99") == (Risk.LOW, [])  # unknown ref: tool errors


def test_navigation_rules() -> None:
    assert classify("browser_navigate", url="https://shop.test/a")[0] == Risk.MEDIUM  # own risk
    risk, names = classify("browser_navigate", url="https://new.test/")
    assert names == ["browser-new-domain"] and risk == Risk.MEDIUM
    risk, names = classify("browser_navigate", url="https://u:p@shop.test/")
    assert risk == Risk.HIGH and "browser-credentials-in-url" in names
    assert "browser-credentials-in-url" in classify(
        "browser_navigate", url="https://shop.test/?access_token=abc")[1]
    risk, names = classify("browser_navigate", url="https://shop.test/setup.msi")
    assert risk == Risk.HIGH and "browser-download-url" in names


def test_typing_rules() -> None:
    risk, names = classify("browser_type", ref="e8", text="DE00")
    assert risk == Risk.CRITICAL and "browser-type-payment-field" in names
    risk, names = classify("browser_type", ref="e15", text="1990-01-01")
    assert risk == Risk.HIGH and "browser-type-personal-data" in names
    risk, names = classify("browser_type", ref="e12", text="ghp_" + "a" * 36)
    assert risk == Risk.CRITICAL and "browser-type-secret-value" in names
    risk, names = classify("browser_type", secret="hunter2-held", ref="e12",
                           text="my hunter2-held")
    assert risk == Risk.CRITICAL and "browser-type-secret-value" in names
    risk, names = classify("browser_type", ref="e12", text="shoes", submit=True)
    assert risk == Risk.MEDIUM and names == ["browser-type-submit"]


@pytest.mark.parametrize(("ref", "secret"), [
    ("e9", True), ("e10", True), ("e11", True), ("e8", False), ("e12", False), ("e15", False)])
def test_secret_fields(ref: str, secret: bool) -> None:
    assert (ELEMENTS[ref].secret_reason() is not None) is secret


async def test_guard_stage_refuses_password_fields_without_asking() -> None:
    guard = BrowserGuardStage(FakeSessions(ELEMENTS))
    reached: list[str] = []

    async def nxt(req: CallRequest) -> ToolResult:
        reached.append(req.call.arguments["ref"])
        return ToolResult(req.call.id, req.call.name, True, "typed")

    for ref in ("e9", "e10", "e11", "e12"):
        req = CallRequest(ToolCall("browser_type", {"ref": ref, "text": "x"}),
                          TOOLS["browser_type"], "s1")
        res = await guard(req, nxt)
        assert res.decision == ("allowed" if ref == "e12" else "denied"), ref
    assert reached == ["e12"]


def test_snapshot_parse_and_mask() -> None:
    text = ('- generic [ref=f1e1]:\n  - textbox "Password" [ref=f1e2]: hunter2\n'
            '  - textbox "Nick" [ref=f1e3]: pingu\n  - button "Say \\"hi\\"" [ref=f1e4]')
    assert parse(text) == [("f1e1", "generic", ""), ("f1e2", "textbox", "Password"),
                           ("f1e3", "textbox", "Nick"), ("f1e4", "button", 'Say "hi"')]
    elements = {"f1e2": el("f1e2", "textbox", "Password", type="password"),
                "f1e3": el("f1e3", "textbox", "Nick", type="text")}
    out = mask(text, elements, [])
    assert "hunter2" not in out and "[hidden by bastion]" in out and "pingu" in out
    plain = {r: Element(r, e.role, "Field", {}) for r, e in elements.items()}
    by_value = mask(text, plain, ["hunter2"])  # the page holds it in a password input
    assert "hunter2" not in by_value and "pingu" in by_value
    assert "pingu" not in mask(text, plain, None)  # unknown: every field value is hidden


def test_doctor_names_the_chromium_install_line() -> None:
    from bastion.cli._doctor import check_browser
    from bastion.config.model import Config

    config = Config()
    config.browser.enabled = True
    config.browser.executable = Path("/nonexistent/chromium")
    check = check_browser(config)
    assert check.status == "WARN" and check.fix == "apt install chromium"


async def test_missing_extra_is_a_clear_error_with_the_pip_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from bastion.errors import MissingExtraError
    from bastion.security.browser.manager import BrowserManager, BrowserSettings
    from bastion.tools.builtin.web import DirectFetcher

    monkeypatch.setitem(sys.modules, "playwright.async_api", None)  # import fails
    manager = BrowserManager(BrowserSettings(), fetcher=DirectFetcher(), workspace=tmp_path)
    with pytest.raises(MissingExtraError) as err:
        await manager.read("s1")
    assert "pip install 'bastion[browser]'" in err.value.user_text()


def test_server_chosen_download_names_are_one_safe_component() -> None:
    from bastion.security.browser._network import download_name
    from bastion.security.browser.rules import download_kind

    def name(cd: str, url: str = "https://x.test/get?id=1") -> str:
        return download_name(url, {"content-disposition": cd})

    assert name("attachment; filename*=UTF-8''..%2F..%2F.ssh%2Fauthorized_keys") \
        == "authorized_keys"
    assert name('attachment; filename="..\\\\..\\\\evil.sh"') == "evil.sh"
    assert name('attachment; filename="plain.txt"; filename*=UTF-8\'\'r%C3%A9al.exe') \
        == "r_al.exe"  # filename* wins, non-ASCII is replaced
    assert name('attachment; filename=".bashrc"') == "bashrc"
    assert name("attachment", "https://x.test/dir/Setup%20v2.msi") == "Setup_v2.msi"
    assert name('attachment; filename="../.."') == "download"
    long = name(f'attachment; filename="{"a" * 300}.deb"')
    assert len(long) <= 120 and long.endswith(".deb") and download_kind(long) == "deb"
