"""A llama.cpp built for one CPU, on another: each CPU kind gets its own build, and a build moved
to a CPU without its extensions is refused with the fix instead of dying with SIGILL.

The other CPU is real where it counts: qemu-user emulates a Haswell (AVX2, no AVX-512) and runs
this venv's llama.cpp on it, and a probe compiled here asks that CPU (CPUID, through GCC's
``__builtin_cpu_supports``) what it has; bastion's verdict is checked against that answer.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.hardware.isa import CPUINFO_ENV, current_isa
from bastion.llm import native_build
from bastion.llm.embedded import shipped_model_path
from tests.integration.cli.conftest import ROOT, cli_env

pytestmark = [pytest.mark.real_model]
pytest.importorskip("llama_cpp")

WHEEL = ROOT / "scripts" / "llama-cpp" / "wheel.sh"
FIX = ROOT / "tests" / "fixtures" / "hardware"
QEMU_CPU = "Haswell-v4"  # AVX2, FMA, F16C; no AVX-512 (qemu's TCG emulates up to AVX2)
# GCC's names for __builtin_cpu_supports -> /proc/cpuinfo's
PROBED = {"avx": "avx", "avx2": "avx2", "fma": "fma", "avx512f": "avx512f",
          "avx512bw": "avx512bw", "avx512vl": "avx512vl", "avx512dq": "avx512dq",
          "avx512cd": "avx512cd", "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
          "avx512vbmi": "avx512vbmi", "avx512vbmi2": "avx512_vbmi2",
          "avx512ifma": "avx512ifma", "avx512bitalg": "avx512_bitalg",
          "avx512vpopcntdq": "avx512_vpopcntdq", "sse4.2": "sse4_2", "sse4.1": "sse4_1",
          "ssse3": "ssse3", "sse3": "pni", "bmi": "bmi1", "bmi2": "bmi2", "popcnt": "popcnt",
          "aes": "aes", "pclmul": "pclmulqdq", "vpclmulqdq": "vpclmulqdq", "gfni": "gfni",
          "vaes": "vaes"}
LOAD_AND_DECODE = (
    "import sys, llama_cpp\n"
    "m = llama_cpp.Llama(sys.argv[1], n_ctx=256, n_threads=1, verbose=False)\n"
    "print(m.create_completion('Hello', max_tokens=2)['choices'][0]['text'])\n"
)


def _key(python: str, **env: str) -> str:
    done = subprocess.run(["bash", str(WHEEL), "--key", python], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **env}, check=True)
    return done.stdout.strip()


def test_the_installed_build_carries_the_record_of_this_cpu() -> None:
    """`make install`'s wheel holds its builder's extensions, in pip's file list (an
    uninstall or another build of the same version removes it), and they are this CPU's."""
    record = native_build.installed_record()
    assert record is not None, "llama-cpp-python was not built by `make install` (wheel.sh)"
    assert record.isa == frozenset(current_isa() or [])
    files = importlib.metadata.files("llama_cpp_python") or []
    assert any(str(f) == f"llama_cpp/{native_build.RECORD_NAME}" for f in files)
    native_build.check()  # nothing missing here


def test_the_wheel_cache_key_follows_the_cpu(tmp_path: Path) -> None:
    """A shared home or a copied wheel cache never hands one CPU's native build to another,
    and a microcode's or hypervisor's flags do not force a rebuild."""
    here = _key(sys.executable)
    stamp = (Path(sys.executable).parent.parent / ".llama-cpp-wheel").read_text().strip()
    assert stamp == here  # the venv holds the build for this CPU's key
    avx2 = _key(sys.executable, **{CPUINFO_ENV: str(FIX / "cpuinfo_amd_epyc_avx2.txt")})
    assert avx2 != here
    text = Path("/proc/cpuinfo").read_text()
    noisy = tmp_path / "cpuinfo"
    noisy.write_text(text.replace("\nflags\t\t: ", "\nflags\t\t: md_clear hypervisor arat "))
    if platform.machine() == "x86_64":
        assert noisy.read_text() != text  # the flags line was there to add to
    assert _key(sys.executable, **{CPUINFO_ENV: str(noisy)}) == here


def _emulated_isa(tmp_path: Path) -> list[str]:
    """This CPU's extensions less those qemu's emulated CPU says (CPUID) it lacks."""
    probe = tmp_path / "probe.c"
    checks = "".join(f'  if (__builtin_cpu_supports("{n}")) puts("{n}");\n' for n in PROBED)
    probe.write_text("#include <stdio.h>\nint main(void) {\n  __builtin_cpu_init();\n"
                     + checks + "  return 0;\n}\n")
    subprocess.run(["gcc", "-O1", "-o", str(tmp_path / "probe"), str(probe)], check=True,
                   timeout=60)
    native = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True,
                            check=True).stdout.split()
    emulated = subprocess.run(["qemu-x86_64", "-cpu", QEMU_CPU, str(tmp_path / "probe")],
                              capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert "avx2" in emulated and "avx512f" not in emulated, emulated
    lacks = {PROBED[n] for n in native if n not in emulated}
    return sorted(set(current_isa() or []) - lacks)


@pytest.mark.skipif(platform.machine() != "x86_64" or not shutil.which("qemu-x86_64"),
                    reason="needs an x86_64 host and qemu-user (scripts/system-deps.sh)")
def test_a_build_from_an_avx512_cpu_dies_on_an_avx2_cpu_and_bastion_refuses_it_first(
        tmp_path: Path, bastion_home: Path) -> None:
    record = native_build.installed_record()
    assert record is not None and record.isa is not None
    if "avx512f" not in record.isa:  # (an extension such as gfni alone need not be used)
        pytest.skip(f"this build has no AVX-512: a {QEMU_CPU} runs it")
    emulated = _emulated_isa(tmp_path)
    missing = native_build.missing_isa(record, emulated)
    # the attack's premise, on the emulated CPU: this venv's llama.cpp dies in its first
    # multiply (the interpreter and `import llama_cpp` run there; the kernels do not)
    qemu = ["qemu-x86_64", "-cpu", QEMU_CPU, sys.executable]
    imported = subprocess.run([*qemu, "-c", "import llama_cpp; print('imported')"],
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0 and "imported" in imported.stdout, imported.stderr[-2000:]
    died = subprocess.run([*qemu, "-c", LOAD_AND_DECODE, str(shipped_model_path())],
                          capture_output=True, text=True, timeout=300)
    assert died.returncode == -4, (died.returncode, died.stderr[-2000:])  # SIGILL
    # bastion's verdict for that CPU: refused, naming what it lacks
    assert "avx512f" in missing
    with pytest.raises(native_build.BuiltForAnotherCpu, match="avx512f"):
        native_build.check(record, emulated)
    # and through the CLI, on that CPU's flags: one line with the fix, nothing loaded
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: QEMU Haswell\nflags\t\t: "
                       + " ".join(emulated) + "\n\n")
    env = {**cli_env(bastion_home), CPUINFO_ENV: str(cpuinfo)}
    init = subprocess.run([sys.executable, "-m", "bastion", "init", "--yes"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    shown = " ".join((init.stdout + init.stderr).split())
    assert "built for another CPU" in shown and "make install" in shown, shown
    ask = subprocess.run([sys.executable, "-m", "bastion", "ask", "Say OK."], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    said = ask.stdout + ask.stderr
    assert ask.returncode != 0 and "Traceback" not in said, said
    line = next(ln for ln in said.splitlines() if "built for another CPU" in ln)
    assert "QEMU Haswell" in line and "avx512f" in line and "make install" in line
    doctor = subprocess.run([sys.executable, "-m", "bastion", "doctor"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    out = " ".join(doctor.stdout.split())
    assert doctor.returncode == 1 and "built for another CPU" in out and "make install" in out
    assert "model smoke test" not in out  # refused, not loaded
    node = subprocess.run([sys.executable, "-m", "bastion", "node", "serve", "--port", "1",
                           "--no-announce"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    said = node.stdout + node.stderr
    assert node.returncode != 0 and "Traceback" not in said, said
    assert "built for another CPU" in said and "make install" in said, said


def test_init_and_doctor_name_the_build_they_checked(bastion_home: Path) -> None:
    env = cli_env(bastion_home)
    init = subprocess.run([sys.executable, "-m", "bastion", "init", "--yes"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    shown = " ".join((init.stdout + init.stderr).split())
    assert "built for this CPU's instruction sets" in shown, shown
    doctor = subprocess.run([sys.executable, "-m", "bastion", "doctor"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    line = next(ln for ln in doctor.stdout.splitlines() if "llama.cpp" in ln)
    assert "OK" in line and "built for this CPU's instruction sets" in line, doctor.stdout


RPI4 = {"cpu": "Raspberry Pi 4 Model B Rev 1.4", "machine": "aarch64",
        "isa": ["asimd", "cpuid", "crc32", "evtstrm", "fp"]}


def test_a_venv_built_on_an_arm_box_is_one_line_with_the_fix_on_this_one(
        tmp_path: Path, bastion_home: Path) -> None:
    """The attack: a home directory shared by a home lab's boxes holds a venv whose
    llama-cpp-python was built on the Raspberry Pi; bastion runs from it on this x86 box.

    The copy of this venv's package has real aarch64 libraries (built by the cross compiler):
    the dynamic loader cannot load them here, and glibc says "No such file or directory" of a
    file that is there. With the build's record (``make install`` wrote one on the Pi) bastion
    refuses by name before importing; without one (built some other way) the failed import is
    one line that says what the library is. Never a traceback, from any command that loads it.
    """
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("no aarch64 cross compiler (scripts/system-deps.sh installs "
                    "gcc-aarch64-linux-gnu)")
    if platform.machine() == "aarch64":
        pytest.skip("this box is an ARM one: aarch64 libraries load here")
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.submodule_search_locations
    pkg = tmp_path / "site" / "llama_cpp"
    shutil.copytree(next(iter(spec.submodule_search_locations)), pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "lib.c").write_text("int bastion_built_on_arm(void) { return 1; }\n")
    arm_lib = tmp_path / "libarm.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(arm_lib), str(tmp_path / "lib.c")],
                   check=True, timeout=120)
    libs = sorted((pkg / "lib").glob("lib*.so*"))
    assert any(p.name == "libllama.so" for p in libs)
    for lib in libs:
        shutil.copyfile(arm_lib, lib)
    env = {**cli_env(bastion_home), "PYTHONPATH": f"{tmp_path / 'site'}:{ROOT / 'src'}",
           "COLUMNS": "1000"}  # (doctor's table rows unwrapped)
    subprocess.run([sys.executable, "-m", "bastion", "init", "--yes"], env=cli_env(bastion_home),
                   cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    # the premise: this copy does not load here
    loads = subprocess.run([sys.executable, "-c", "import llama_cpp"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert loads.returncode != 0 and "No such file or directory" in loads.stderr

    def run(*args: str) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-m", "bastion", *args], env=env, cwd=ROOT,
                              input="hello\n", capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout + done.stderr

    # 1. with the Pi's build record: refused by architecture before anything is imported
    (pkg / native_build.RECORD_NAME).write_text(json.dumps(RPI4))
    here = platform.machine()
    for args in (("ask", "Say OK."), ("node", "serve", "--port", "1", "--no-announce")):
        code, said = run(*args)
        assert code != 0 and "Traceback" not in said, said
        line = next(ln for ln in said.splitlines() if "built for aarch64" in ln)
        assert (f"built for aarch64 (Raspberry Pi 4 Model B Rev 1.4); this machine is {here}"
                in line and "make install" in line), line
    code, said = run("doctor")
    out = " ".join(said.split())
    assert code == 1 and f"this machine is {here}" in out and "make install" in out, out
    # 2. no record: the import fails, in one line that names what the file is
    (pkg / native_build.RECORD_NAME).unlink()
    for args in (("ask", "Say OK."), ("chat",), ("serve", "--port", "1"),
                 ("node", "serve", "--port", "1", "--no-announce")):
        code, said = run(*args)
        assert code != 0 and "Traceback" not in said, said
        line = next(ln for ln in said.splitlines() if "cannot load its package 'llama_cpp" in ln)
        assert f"libllama.so is aarch64 code; this machine runs {here}" in line, line
        assert line.endswith("each CPU kind gets its own cached build))"), line  # the fix
    code, said = run("doctor")
    row = " ".join(next(ln for ln in said.splitlines() if "llama.cpp" in ln).split())
    assert code == 1 and "FAIL" in row and "make install" in row, row
    assert f"libllama.so is aarch64 code; this machine runs {here}" in row, row
