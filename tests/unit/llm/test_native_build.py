"""A native llama.cpp build on a CPU without the builder's extensions: refused with the fix
before anything native loads (bastion.llm.native_build); a SIGILL names the same fix."""

from __future__ import annotations

import json
import platform
import signal
import sys
from pathlib import Path

import pytest

from bastion.hardware.isa import isa_from_cpuinfo
from bastion.llm import native_build
from bastion.llm.native_build import BuildRecord, BuiltForAnotherCpu, BuiltForAnotherMachine

FIX = Path(__file__).parents[2] / "fixtures" / "hardware"
XEON = isa_from_cpuinfo((FIX / "cpuinfo_intel_xeon_avx512.txt").read_text())
EPYC = isa_from_cpuinfo((FIX / "cpuinfo_amd_epyc_avx2.txt").read_text())
GRAVITON = isa_from_cpuinfo((FIX / "cpuinfo_graviton3_aarch64.txt").read_text())


def _rec(isa: list[str] | None, cpu: str = "Intel Xeon Gold 6230R") -> BuildRecord:
    # (this machine's architecture: these tests are about extensions, on any host)
    return BuildRecord(None if isa is None else frozenset(isa), cpu, platform.machine())


def test_an_avx512_build_on_an_avx2_cpu_is_refused_with_the_fix() -> None:
    with pytest.raises(BuiltForAnotherCpu) as got:
        native_build.check(_rec(XEON), EPYC)
    err = got.value
    assert set(err.missing) == set(XEON) - set(EPYC)
    text = err.user_text()
    assert "\n" not in text
    assert "Intel Xeon Gold 6230R" in text and "SIGILL" in text
    # the usual culprits come first; the list is cut, not the line
    assert text.index("avx512f") < text.index("avx512bw") < text.index("lacks")
    assert all(f in text for f in err.missing) and "make install" in (err.fix or "")
    amx = [*XEON, "amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"]
    with pytest.raises(BuiltForAnotherCpu, match=r"uses avx512f, .* and 4 more, which"):
        native_build.check(_rec(amx), EPYC)


def test_the_same_cpu_a_portable_build_or_no_record_pass() -> None:
    native_build.check(_rec(XEON), XEON)
    common = sorted(set(XEON) & set(EPYC))
    native_build.check(_rec(common), XEON)  # a build for fewer extensions runs on more
    with pytest.raises(BuiltForAnotherCpu, match="sse4a"):  # AMD's own, absent on the Xeon
        native_build.check(_rec(EPYC), XEON)
    native_build.check(_rec(None), EPYC)  # GGML_NATIVE=OFF
    assert native_build.missing_isa(None, EPYC) == []
    assert native_build.missing_isa(_rec(XEON), None) == []  # this CPU unknown: no verdict


def test_a_build_for_another_architecture_is_refused_by_name() -> None:
    """An x86 venv on an ARM box (a shared home): its libraries would not even load there."""
    x86 = BuildRecord(frozenset(EPYC), "AMD EPYC 7R13", "x86_64")
    with pytest.raises(BuiltForAnotherMachine) as got:
        native_build.check(x86, GRAVITON, machine="aarch64")
    text = got.value.user_text()
    assert "\n" not in text and "make install" in text
    assert "built for x86_64 (AMD EPYC 7R13); this machine is aarch64" in text
    assert isinstance(got.value, BuiltForAnotherCpu)  # (what the loaders and doctor catch)
    native_build.check(x86, EPYC, machine="x86_64")
    # a record without a machine (none is written without one, but a hand-made one): no verdict
    native_build.check(BuildRecord(frozenset(EPYC), "AMD EPYC 7R13", ""), EPYC, machine="aarch64")
    # an ARM build on an ARM CPU without its extensions: the usual culprits named
    arm = BuildRecord(frozenset(GRAVITON), "Graviton3", "aarch64")
    rpi4 = isa_from_cpuinfo((FIX / "cpuinfo_rpi4_aarch64.txt").read_text())
    with pytest.raises(BuiltForAnotherCpu, match=r"uses sve, i8mm, asimddp, "):
        native_build.check(arm, rpi4, machine="aarch64")


def _fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str | None) -> None:
    pkg = tmp_path / "llama_cpp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise SystemExit('the record is read without importing')\n")
    if record is not None:
        (pkg / native_build.RECORD_NAME).write_text(record)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)


def test_the_record_is_read_beside_the_package_without_importing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch,
                  json.dumps({"isa": XEON, "cpu": "Xeon", "machine": "x86_64"}))
    rec = native_build.installed_record()
    assert rec == BuildRecord(frozenset(XEON), "Xeon", "x86_64")
    with pytest.raises(BuiltForAnotherCpu):
        native_build.check(here=EPYC)
    assert "llama_cpp" not in sys.modules


@pytest.mark.parametrize("record", [None, "{not json", "[1, 2]"])
def test_no_or_a_damaged_record_means_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               record: str | None) -> None:
    _fake_package(tmp_path, monkeypatch, record)
    assert native_build.installed_record() is None
    native_build.check(here=EPYC)
    assert "not built by `make install`" in native_build.describe()


def test_a_worker_killed_by_sigill_names_the_rebuild() -> None:
    from bastion.llm.worker import WorkerCrashed

    ill = WorkerCrashed(-signal.SIGILL)
    assert "SIGILL" in ill.message and ill.fix == native_build.SIGILL_FIX
    assert "make install" in ill.fix
    assert WorkerCrashed(-signal.SIGSEGV).fix != native_build.SIGILL_FIX


@pytest.mark.parametrize("isolation", ["worker", "in_process"])
def test_both_embedded_paths_refuse_before_loading(monkeypatch: pytest.MonkeyPatch,
                                                   isolation: str) -> None:
    from bastion.config.model import Config
    from bastion.llm import embedded, source
    from bastion.models import create_model

    monkeypatch.setattr(native_build, "installed_record", lambda: _rec(XEON))
    monkeypatch.setattr(native_build, "current_isa", lambda: EPYC)
    for module, name in ((embedded, "load_llama"), (embedded, "load_vocab"),
                         (source, "load_vocab")):  # (every name the loaders call it by)
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("loaded"))
    config = Config.model_validate({"model": {"backend": "embedded", "isolation": isolation}})
    with pytest.raises(BuiltForAnotherCpu):
        create_model(config)


def test_describe_says_what_it_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_build, "installed_record", lambda: _rec(EPYC, "AMD EPYC"))
    monkeypatch.setattr(native_build, "current_isa", lambda: EPYC)
    assert native_build.describe().startswith("built for this CPU's instruction sets (on AMD")
    monkeypatch.setattr(native_build, "current_isa", lambda: None)
    assert "does not say" in native_build.describe()
    monkeypatch.setattr(native_build, "installed_record", lambda: _rec(None))
    assert native_build.describe() == "a portable build (no CPU-specific target)"
