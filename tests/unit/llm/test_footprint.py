"""The plan of an embedded model's memory: context lowered to the trained one, slots that fit."""

from __future__ import annotations

import pytest

from bastion.hardware.memory import Room, gib
from bastion.llm.footprint import WORKER_RUNTIME, ContextTooLarge, Shape, plan

SMOLLM2 = {"general.architecture": "llama", "llama.block_count": "30",
           "llama.attention.head_count": "9", "llama.attention.head_count_kv": "3",
           "llama.embedding_length": "576", "llama.context_length": "8192"}
MB = 1 << 20


def _plan(room: int | None, **kw):  # type: ignore[no-untyped-def]
    args = {"n_ctx": 4096, "slots": None, "auto_slots": 4, "model_bytes": 145 * MB,
            "repack": True, "workers": None, "auto_workers": lambda s: min(s, 2),
            "room": None if room is None else Room(room, room), **kw}
    return plan(Shape.of(SMOLLM2), **args)


def test_the_shape_is_read_from_the_metadata() -> None:
    shape = Shape.of(SMOLLM2)
    assert shape.trained_ctx == 8192
    assert shape.kv_per_token == 30 * 3 * (64 + 64) * 2  # 22.5 KiB, f16 keys and values
    explicit = Shape.of({**SMOLLM2, "llama.attention.key_length": "128",
                         "llama.attention.value_length": "96"})
    assert explicit.kv_per_token == 30 * 3 * (128 + 96) * 2


@pytest.mark.parametrize("key", ["gemma3.attention.sliding_window", "gemma3.ssm.state_size"])
def test_caches_that_are_not_the_plain_product_are_not_estimated(key: str) -> None:
    meta = {k.replace("llama", "gemma3"): v for k, v in SMOLLM2.items()}
    meta["general.architecture"] = "gemma3"
    assert Shape.of(meta).kv_per_token is not None
    assert Shape.of({**meta, key: "512"}).kv_per_token is None


def test_a_context_above_the_trained_one_is_lowered() -> None:
    got = _plan(None, n_ctx=1 << 20, slots=1)
    assert got.n_ctx == 8192 and got.slots == 1
    assert "a 1048576-token context is above the 8192 tokens" in got.notes[0].text
    assert got.notes[0].fix == "`bastion config set model.n_ctx 8192`"


def test_what_fits_is_kept_and_described() -> None:
    got = _plan(20 << 30)
    assert (got.n_ctx, got.slots, got.workers, got.notes) == (4096, 4, 2, ())
    assert got.kv_bytes == 4 * 4096 * 23040 and got.model_bytes == 2 * 145 * MB
    assert "KV cache 360 MiB + model 290 MiB, 20.0 GiB available" in got.describe()


def test_unset_slots_are_lowered_until_they_fit() -> None:
    one = 8192 * 23040 + 145 * MB + WORKER_RUNTIME
    got = _plan(one + MB, n_ctx=8192)
    assert got.slots == 1 and got.workers == 1
    four = gib(4 * 8192 * 23040 + 2 * 145 * MB + 2 * WORKER_RUNTIME)
    assert [n.text for n in got.notes] == [f"1 conversation(s) at once, not 4: 4 would need {four}"]
    assert "a shorter context (`bastion config set model.n_ctx N`)" in got.notes[0].fix


def test_set_slots_that_cannot_fit_are_refused_with_what_would() -> None:
    with pytest.raises(ContextTooLarge) as caught:
        _plan(1 << 30, n_ctx=8192, slots=64)
    err = caught.value
    assert err.message.startswith("the local model needs 11.")
    assert "KV cache 11.2 GiB, 22 KiB per token per conversation" in err.message
    left = (1 << 30) - 2 * 145 * MB - 2 * WORKER_RUNTIME
    assert f"model.slots {left // (8192 * 23040)}` (fewer conversations" in (err.fix or "")
    assert f"model.n_ctx {left // (64 * 23040) // 256 * 256}` (a shorter" in (err.fix or "")


def test_a_model_that_does_not_fit_at_all_says_so() -> None:
    with pytest.raises(ContextTooLarge) as caught:
        _plan(100 * MB, slots=1)
    assert "smaller or more quantised model" in (caught.value.fix or "")


def test_unknown_room_or_layers_on_a_gpu_are_not_refused() -> None:
    assert _plan(None, n_ctx=8192, slots=64).slots == 64
    assert _plan(1 << 30, n_ctx=8192, slots=64, gpu_layers=99).kv_bytes is None


def test_the_fix_names_settings_as_the_caller_spells_them() -> None:
    """bastion node serve has one context and a flag: no slots offered, --n-ctx named."""
    with pytest.raises(ContextTooLarge) as caught:
        _plan(400 * MB, n_ctx=8192, slots=1, workers=1, settings={"n_ctx": "--n-ctx {}"})
    fix = caught.value.fix or ""
    left = 400 * MB - 145 * MB - WORKER_RUNTIME
    assert fix == f"--n-ctx {left // 23040 // 256 * 256} (a shorter context), or free memory"


def test_the_callers_notes_come_first() -> None:
    from bastion.llm.footprint import Note

    gpu = Note("model.n_gpu_layers 99 has no effect", "rebuild")
    got = _plan(None, n_ctx=1 << 20, slots=1, notes=[gpu])
    assert got.notes[0] == gpu and "above the 8192 tokens" in got.notes[1].text
