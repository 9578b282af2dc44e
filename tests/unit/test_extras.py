"""Optional packages: missing is one line with the pip line; installed but broken (a native
library that does not load) is one line with the loader's reason and the fix, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bastion._extras import require
from bastion.errors import BrokenExtraError, MissingExtraError


def _package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_a_missing_package_names_the_extra() -> None:
    with pytest.raises(MissingExtraError) as got:
        require("bastion_no_such_module", extra="local", feature="the embedded model")
    assert got.value.user_text() == ("the embedded model needs the optional package "
                                     "'bastion_no_such_module' (fix: pip install 'bastion[local]')")


def test_a_package_whose_library_does_not_load_is_one_line_with_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # what llama-cpp-python raises when its libllama.so is for another machine or damaged
    _package(tmp_path, monkeypatch, "bastion_broken_native", (
        "raise RuntimeError(\"Failed to load shared library '/x/libllama.so': /x/libllama.so: "
        "invalid ELF header\")\n"))
    with pytest.raises(BrokenExtraError) as got:
        require("bastion_broken_native", extra="local", feature="the embedded model",
                broken_fix="`make install`")
    text = got.value.user_text()
    assert "\n" not in text
    assert text.startswith("the embedded model cannot load its package 'bastion_broken_native': "
                           "Failed to load shared library")
    assert "invalid ELF header" in text and text.endswith("(fix: `make install`)")


def test_a_broken_package_without_a_fix_of_its_own_reinstalls_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(tmp_path, monkeypatch, "bastion_broken_dlopen",
             "raise OSError('libportaudio.so.2: cannot open shared object file: No such file or "
             "directory\\n(and a second line)')\n")
    with pytest.raises(BrokenExtraError) as got:
        require("bastion_broken_dlopen", extra="voice", feature="speech")
    assert got.value.user_text() == (
        "speech cannot load its package 'bastion_broken_dlopen': libportaudio.so.2: cannot "
        "open shared object file: No such file or directory "
        "(fix: pip install --force-reinstall 'bastion[voice]')")


def _elf(path: Path, machine: int) -> Path:
    """A 64-bit little-endian ELF header for ``machine`` (e_machine at byte 18)."""
    path.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little")
                     + bytes(44))
    return path


def test_a_library_for_another_architecture_is_named_as_such(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc calls such a file "No such file or directory"; the line says what it is."""
    import bastion._extras as extras

    monkeypatch.setattr(extras, "_INTERPRETER", str(_elf(tmp_path / "python3", 62)))  # x86_64
    arm = _elf(tmp_path / "libllama.so", 183)  # aarch64
    ours = _elf(tmp_path / "libggml.so.0.25.3", 62)
    _package(tmp_path, monkeypatch, "bastion_foreign_native", (
        f"raise RuntimeError(\"Failed to load shared library '{arm}': {arm}: cannot open shared "
        "object file: No such file or directory\")\n"))
    with pytest.raises(BrokenExtraError) as got:
        require("bastion_foreign_native", extra="local", feature="the embedded model")
    assert got.value.message.endswith(
        "No such file or directory (libllama.so is aarch64 code; this machine runs x86_64)")
    _package(tmp_path, monkeypatch, "bastion_own_native",
             f"raise OSError('{ours}: undefined symbol: ggml_init')\n")
    with pytest.raises(BrokenExtraError) as got:
        require("bastion_own_native", extra="local", feature="the embedded model")
    assert got.value.message.endswith("undefined symbol: ggml_init")  # no note: ours
