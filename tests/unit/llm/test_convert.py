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
