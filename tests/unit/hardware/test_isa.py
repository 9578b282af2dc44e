"""The instruction-set extensions a native build may use (bastion.hardware.isa), on captured
/proc/cpuinfo files of real machines (tests/fixtures/hardware)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.hardware import isa

FIX = Path(__file__).parents[2] / "fixtures" / "hardware"
SCRIPT = Path(isa.__file__)


def _isa(name: str) -> list[str]:
    return isa.isa_from_cpuinfo((FIX / name).read_text())


def test_x86_keeps_the_extensions_a_compiler_emits_and_drops_the_rest() -> None:
    xeon = _isa("cpuinfo_intel_xeon_avx512.txt")
    assert {"avx512f", "avx512bw", "avx512_vnni", "avx2", "fma", "f16c", "pni"} <= set(xeon)
    # timers, virtualisation and mitigation flags do not change what code runs, nor do
    # extensions only an intrinsic reaches (ggml calls none)
    for other in ("constant_tsc", "hypervisor", "ibrs", "ssbd", "md_clear", "arat", "lm", "fpu",
                  "aes", "rdrand", "xsave", "pclmulqdq"):
        assert other not in xeon
    assert xeon == sorted(xeon)


def test_an_avx2_epyc_lacks_what_the_avx512_xeon_has() -> None:
    epyc, xeon = set(_isa("cpuinfo_amd_epyc_avx2.txt")), set(_isa("cpuinfo_intel_xeon_avx512.txt"))
    assert "avx2" in epyc and not any(f.startswith("avx512") for f in epyc)
    assert {"avx512f", "avx512bw", "avx512vl"} <= xeon - epyc


def test_arm_features_are_all_extensions() -> None:
    graviton = _isa("cpuinfo_graviton3_aarch64.txt")
    assert {"asimd", "sve", "i8mm", "asimddp"} <= set(graviton)
    assert "sve" not in _isa("cpuinfo_rpi4_aarch64.txt")


def test_macos_reports_its_optional_features() -> None:
    assert isa.isa_from_sysctl((FIX / "sysctl_apple_m2_pro.txt").read_text()) == ["arm64", "neon"]
    assert isa.isa_from_sysctl("hw.optional.avx512f: 0\nhw.optional.avx2_0: 1\n") == ["avx2_0"]


def test_the_script_prints_the_key_line_and_the_record_for_another_machine() -> None:
    env = {"BASTION_CPUINFO": str(FIX / "cpuinfo_amd_epyc_avx2.txt"), "PATH": "/usr/bin:/bin"}
    line = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True,
                          text=True, check=True).stdout.split()
    assert line[1:] == _isa("cpuinfo_amd_epyc_avx2.txt")
    rec = json.loads(subprocess.run([sys.executable, str(SCRIPT), "--record"], env=env,
                                    capture_output=True, text=True, check=True).stdout)
    assert rec["isa"] == line[1:] and rec["cpu"] == "AMD EPYC"
    portable = json.loads(subprocess.run(
        [sys.executable, str(SCRIPT), "--record", "--portable"], env=env,
        capture_output=True, text=True, check=True).stdout)
    assert portable["isa"] is None


def test_no_cpuinfo_is_unknown(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(isa.CPUINFO_ENV, str(tmp_path / "missing"))
    monkeypatch.setattr(isa.sys, "platform", "linux")
    assert isa.current_isa() is None


@pytest.mark.parametrize(("file", "name"), [
    ("cpuinfo_amd_epyc_avx2.txt", "AMD EPYC"),
    ("cpuinfo_rpi4_aarch64.txt", "Raspberry Pi 4 Model B Rev 1.4"),  # the board, in its last block
    ("cpuinfo_graviton3_aarch64.txt", "ARM Neoverse-V1"),  # no model name on ARM: the core part
])
def test_the_cpu_is_named_in_messages_on_x86_and_arm(monkeypatch, file: str, name: str) -> None:
    monkeypatch.setenv(isa.CPUINFO_ENV, str(FIX / file))
    assert isa.cpu_name() == name
