"""model.repack: auto — on AMX CPUs the choice follows a probe of the installed llama.cpp build."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bastion.llm import repack

MODEL = Path("/models/shipped.gguf")


class Runner:
    """Stands in for the probe's child process: answers with one exit status, counts runs."""

    def __init__(self, returncode: int = 0, stdout: str = "' Paris' ok\n",
                 raises: BaseException | None = None) -> None:
        self.returncode, self.stdout, self.raises = returncode, stdout, raises
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.argvs.append(argv)
        if self.raises is not None:
            raise self.raises
        return subprocess.CompletedProcess(argv, self.returncode, self.stdout, "")


@pytest.fixture
def amx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An AMX CPU with llama.cpp build "lib-a" and a private cache folder; returns that folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BASTION_MODEL_CACHE", str(cache))
    monkeypatch.setattr(repack, "has_amx", lambda: True)
    monkeypatch.setattr(repack, "_installed_key", lambda: "lib-a")
    monkeypatch.setattr(repack, "_MEMO", {})
    return cache


def test_without_amx_repacking_stays_on_and_nothing_is_probed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repack, "has_amx", lambda: False)
    run = Runner(returncode=-11)
    got = repack.verdict(lambda: MODEL, run)
    assert got.repack is True and run.argvs == []


def test_a_build_whose_amx_kernels_work_repacks_and_is_probed_once(amx: Path) -> None:
    run = Runner()
    got = repack.verdict(lambda: MODEL, run)
    assert got.repack is True and "passed a probe" in got.why
    assert run.argvs == [[repack.sys.executable, "-m", "bastion.llm._repack_probe", str(MODEL)]]
    repack._MEMO.clear()  # a new process: the verdict comes from the private cache file
    assert repack.verdict(lambda: MODEL, run).repack is True and len(run.argvs) == 1
    saved = json.loads((amx / repack.VERDICTS).read_text())
    assert saved["lib-a"]["repack"] is True
    assert (amx / repack.VERDICTS).stat().st_mode & 0o777 == 0o600


def test_a_build_whose_amx_kernels_crash_does_not_repack_and_says_how_to_fix(amx: Path) -> None:
    got = repack.verdict(lambda: MODEL, Runner(returncode=-11, stdout=""))
    assert got.repack is False
    assert "signal 11, SIGSEGV" in got.why and "make install" in got.why


def test_another_build_is_probed_again(amx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Runner(returncode=-11, stdout="")
    assert repack.verdict(lambda: MODEL, run).repack is False
    monkeypatch.setattr(repack, "_installed_key", lambda: "lib-b")  # rebuilt with the fix
    run.returncode, run.stdout = 0, "ok\n"
    assert repack.verdict(lambda: MODEL, run).repack is True and len(run.argvs) == 2
    saved = json.loads((amx / repack.VERDICTS).read_text())
    assert saved["lib-a"]["repack"] is False and saved["lib-b"]["repack"] is True


def test_a_probe_that_hangs_leaves_repacking_off_but_is_not_remembered(amx: Path) -> None:
    run = Runner(raises=subprocess.TimeoutExpired(["x"], repack.PROBE_TIMEOUT_S))
    got = repack.verdict(lambda: MODEL, run)
    assert got.repack is False and "did not finish" in got.why
    assert not (amx / repack.VERDICTS).exists()


def test_an_exit_without_its_ok_line_counts_as_a_failure(amx: Path) -> None:
    assert repack.verdict(lambda: MODEL, Runner(returncode=0, stdout="")).repack is False


def test_no_shipped_model_to_probe_with_leaves_repacking_off(
        amx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.errors import ModelError

    def missing() -> Path:
        raise ModelError("the shipped model package has no .gguf file", fix="pip install ...")

    run = Runner()
    got = repack.verdict(missing, run)
    assert got.repack is False and "model.repack on" in got.why and run.argvs == []


def test_a_cache_folder_others_can_write_is_not_trusted(amx: Path) -> None:
    amx.mkdir(mode=0o700)
    (amx / repack.VERDICTS).write_text(json.dumps({"lib-a": {"repack": True, "why": "planted"}}))
    amx.chmod(0o777)
    run = Runner(returncode=-11, stdout="")
    got = repack.verdict(lambda: MODEL, run)  # the planted verdict is not read; the probe runs
    assert got.repack is False and len(run.argvs) == 1


def test_the_library_key_hashes_the_cpu_kernels_and_the_cpu(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "libggml-cpu.so").write_bytes(b"build 1")
    monkeypatch.setattr(repack, "_cpu_flags", lambda: ["amx_tile", "avx512f", "sse2"])
    first = repack._library_key(tmp_path)
    (tmp_path / "libggml-cpu.so").write_bytes(b"build 2")
    second = repack._library_key(tmp_path)
    monkeypatch.setattr(repack, "_cpu_flags", lambda: ["avx512f", "sse2"])  # another CPU
    third = repack._library_key(tmp_path)
    assert None not in (first, second, third) and len({first, second, third}) == 3
    assert repack._library_key(tmp_path / "missing") is None
