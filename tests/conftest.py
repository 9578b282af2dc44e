"""Shared fixtures: every test gets its own BASTION_HOME."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# one local site and one chromium per test session for every browser test (lazy: no cost
# unless a test asks for them)
pytest_plugins = ["tests.integration.browser.fixtures"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# xdist's workers start with COLUMNS=80 LINES=24 in their environment (execnet's popen gateway)
# though pytest itself has none: the CLI would draw 80-column tables in them only
# (bastion/cli/_console.py), and tests that read a whole cell would fail under -n alone.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("COLUMNS", "LINES"):
        os.environ.pop(_var, None)


# The shipped model's Q8_0 conversion (bastion.llm.convert) is made once and shared by every
# test's home (its sidecar is checked on each load); private to this user, kept between runs.
os.environ.setdefault("BASTION_MODEL_CACHE", os.path.join(
    tempfile.gettempdir(), f"bastion-test-model-cache-{os.getuid()}"))


# Which kernel multiplies small batches is measured per CPU (bastion.llm.kernels), and the two
# kernels may round differently on some CPUs: tests that check a model's words would then depend
# on a timing taken under the suite's own load. The suite keeps llama.cpp's default (sgemm from
# 2 rows); tests/integration/llm/test_batch_kernels.py measures and applies the choice.
os.environ.setdefault("BASTION_SGEMM_MIN_N", "2")


@pytest.fixture(autouse=True)
def bastion_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "bastion-home"
    home.mkdir()
    monkeypatch.setenv("BASTION_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("BASTION_") and "__" in key:
            monkeypatch.delenv(key)
    yield home


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the tests' own Docker daemon if a test started it (tests/_dockerd.py)."""
    import sys

    dockerd = sys.modules.get("tests._dockerd")
    if dockerd is not None:
        dockerd.stop()


# Tests that share something costly or global run in the same xdist worker (`make test` runs
# `-n 2 --dist loadgroup`): a module's tests share its module-scoped fixtures (live servers),
# tests that share a session-scoped fixture of ours (the shipped model's worker, chromium and its
# site, OpenBao, SoftHSM, the voice and embedding models) share it once, and every test that
# starts the tests' Docker daemon (tests/_dockerd.py: one cached data-root, its image loaded
# once) runs beside the others that do. The shipped model's tests (real_model) run one at a time
# too: two llama.cpp engines on 2 busy cores slowed an agent turn from 16 s past its 300 s
# timeout. Each connected set is one xdist_group.
_DOCKERD_USERS = ("tests._dockerd", "tests.security._backends", "from tests import _dockerd")


def _xdist_groups(items: list[pytest.Item]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    texts: dict[str, str] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        module = "mod:" + path
        find(module)
        if path not in texts:
            texts[path] = Path(str(item.path)).read_text(errors="replace")
        if any(user in texts[path] for user in _DOCKERD_USERS):
            union(module, "dockerd")
        if item.get_closest_marker("real_model") is not None:
            union(module, "real_model")
        info = getattr(item, "_fixtureinfo", None)
        for name, defs in (info.name2fixturedefs.items() if info else ()):
            fd = defs[-1]
            owner = getattr(getattr(fd, "func", None), "__module__", "") or ""
            if fd.scope == "session" and owner.startswith("tests"):
                union(module, "fix:" + name)
    roots: dict[str, str] = {}
    for item in items:
        module = "mod:" + item.nodeid.split("::", 1)[0]
        root = find(module)
        # the group is named after its first module (stable across workers: same collection)
        roots.setdefault(root, module[4:])
    return {item.nodeid: roots[find("mod:" + item.nodeid.split("::", 1)[0])] for item in items}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist (an xdist worker), mark every test with its group (see _xdist_groups)."""
    if not hasattr(config, "workerinput"):
        return
    groups = _xdist_groups(items)
    for item in items:
        if not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test whose sandbox backend cannot run here (tests/_dockerd.needs_backend)."""
    if item.get_closest_marker("sandbox_backend") is not None:
        from tests._dockerd import skip_unusable

        skip_unusable(item)
