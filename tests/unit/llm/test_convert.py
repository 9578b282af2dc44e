"""When a model's weights are converted to Q8_0, and the cache's checks (no model loaded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bastion.errors import ModelError
from bastion.llm import convert
from bastion.llm.convert import MAX_SOURCE_BYTES, _meta_ok, decide

MIB = 1 << 20
GIB = 1 << 30
ROOMY = {"available": 16 * GIB, "free_disk": 100 * GIB}


def test_only_small_cpu_models_without_a_batched_kernel_are_converted() -> None:
    yes, why = decide(3, 98 * MIB, mode="auto", n_gpu_layers=0, **ROOMY)  # the shipped Q4_1
    assert yes and "q4_1 weights converted once to q8_0" in why
    assert decide(9, 98 * MIB, mode="auto", n_gpu_layers=0, **ROOMY)[0]  # Q5_1
    for file_type in (2, 7, 15, None):  # Q4_0, Q8_0, Q4_K_M batch already; unknown: as is
        assert not decide(file_type, 98 * MIB, mode="auto", n_gpu_layers=0, **ROOMY)[0]
    off = decide(3, 98 * MIB, mode="off", n_gpu_layers=0, **ROOMY)
    assert off == (False, "q4_1 weights loaded as they are (model.convert off)")
    assert "GPU" in decide(3, 98 * MIB, mode="auto", n_gpu_layers=99, **ROOMY)[1]
    amx = decide(3, 98 * MIB, mode="auto", n_gpu_layers=0, amx=True, **ROOMY)  # AMX kernels
    assert not amx[0] and "AMX kernels batch them" in amx[1]
    assert decide(9, 98 * MIB, mode="auto", n_gpu_layers=0, amx=True, **ROOMY)[0]  # Q5_1: none
    big = decide(3, MAX_SOURCE_BYTES + 1, mode="auto", n_gpu_layers=0, **ROOMY)
    assert not big[0] and "memory-bound" in big[1]
    assert "memory" in decide(3, 98 * MIB, mode="auto", n_gpu_layers=0, available=512 * MIB,
                              free_disk=100 * GIB)[1]
    assert "disk" in decide(3, 98 * MIB, mode="auto", n_gpu_layers=0, available=16 * GIB,
                            free_disk=100 * MIB)[1]


def test_a_changed_cached_copy_is_not_trusted(tmp_path: Path) -> None:
    out, meta = tmp_path / "x.q8_0.gguf", tmp_path / "x.q8_0.json"
    out.write_bytes(b"GGUF" + b"\0" * 60)
    st = out.stat()
    meta.write_text(json.dumps({"source_sha256": "ab", "sha256": "cd", "type": "q8_0",
                                "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    assert _meta_ok(out, meta, "ab") is not None
    assert _meta_ok(out, meta, "other source") is None
    out.write_bytes(b"GGUF" + b"\1" * 61)  # replaced: size (and mtime) differ
    assert _meta_ok(out, meta, "ab") is None


def test_a_cache_others_can_write_to_is_refused(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("BASTION_MODEL_CACHE", str(shared))
    with pytest.raises(ModelError) as err:
        convert.cache_dir()
    assert "not private" in err.value.message and "chmod 700" in (err.value.fix or "")
    monkeypatch.delenv("BASTION_MODEL_CACHE")
    home_cache = convert.cache_dir()  # the default: <home>/models/.converted, 0700
    assert home_cache.name == ".converted" and (home_cache.stat().st_mode & 0o777) == 0o700
    assert os.access(home_cache, os.W_OK)


def test_a_conversion_that_cannot_be_made_loads_the_file_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 60)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("BASTION_MODEL_CACHE", str(shared))
    choice = convert.prepare(src, 3)  # Q4_1: would be converted, but the cache is not private
    assert choice.path == src and not choice.converted
    assert "loaded as they are" in choice.reason and "not private" in choice.reason
    assert not any(shared.iterdir())  # nothing written there
    off = convert.prepare(src, 3, mode="off")
    assert off.path == src and off.reason == "q4_1 weights loaded as they are (model.convert off)"


def test_a_disk_error_while_writing_the_copy_loads_the_file_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 60)
    cache = tmp_path / "cache"
    monkeypatch.setenv("BASTION_MODEL_CACHE", str(cache))

    def full_disk(_src: Path, _dst: Path, ftype: int = 7) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert, "_run_quantizer", full_disk)
    choice = convert.prepare(src, 3)
    assert choice.path == src and not choice.converted
    assert "No space left on device" in choice.reason and "model.convert off" in choice.reason
    assert [p.name for p in cache.iterdir()] == ["sources.json"]  # no temporary file left


def test_converters_racing_on_one_source_leave_a_copy_and_its_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 60)
    monkeypatch.setenv("BASTION_MODEL_CACHE", str(tmp_path / "cache"))
    sha = convert.source_sha256(src)
    calls = []

    def quantize(_src: Path, dst: Path, ftype: int = 7) -> None:
        calls.append(dst)
        if len(calls) == 1:  # another process converts the same source meanwhile
            convert.converted_file(src, sha)
        dst.write_bytes(b"GGUF-q8" + bytes([len(calls)]))

    monkeypatch.setattr(convert, "_run_quantizer", quantize)
    out, digest = convert.converted_file(src, sha)
    record = convert.cached_copy(sha)
    assert record is not None and record["sha256"] == digest  # the record matches the copy
    assert out.read_bytes().startswith(b"GGUF-q8")
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, out.with_suffix(".json").name, "sources.json"])  # no temporary file left
