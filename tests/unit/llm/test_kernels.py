"""Which kernel takes small batches: the rule that turns two paths' timings into a minimum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.llm import kernels
from bastion.llm.kernels import DEFAULT_MIN_N, _describe, decide

AGREE = ("agree", "sgemm")  # a call of the logits check, as _setup records it


def test_sgemm_keeps_every_batch_where_it_is_as_fast() -> None:
    # an Intel Xeon's Q8_0 copy: tinyBLAS wins everywhere (llama.cpp's default stays)
    assert decide({2: (6.0, 11.0), 4: (7.5, 21.0), 8: (10.0, 42.0)}) == DEFAULT_MIN_N
    # within the margin (dots less than 20% faster): not worth leaving llama.cpp's choice
    assert decide({2: (10.0, 9.5), 4: (20.0, 17.0)}) == DEFAULT_MIN_N


def test_batches_go_to_the_dot_products_up_to_the_largest_size_they_clearly_win() -> None:
    # the AMD EPYC (Zen 5) figures: dots win at 2 and 4 rows, tinyBLAS from 8
    zen5 = {2: (23.3, 11.4), 4: (34.6, 23.1), 8: (35.4, 44.9), 16: (49.2, 99.5),
            32: (117.9, 245.5)}
    assert decide(zen5) == 8
    # a win at a larger size lifts the minimum above it, even past a size in between
    assert decide({2: (20.0, 10.0), 4: (20.0, 25.0), 8: (40.0, 30.0), 16: (50.0, 90.0)}) == 16
    # dots win even at the largest size measured: sgemm from twice that
    assert decide({2: (20.0, 10.0), 32: (200.0, 100.0)}) == 64


def test_the_reason_names_the_path_and_the_figures_per_thread_count(monkeypatch: Any) -> None:
    monkeypatch.setattr(kernels, "_library", lambda: _FakeLib())  # (one row per call)
    timings = {1: {2: (23.3, 11.4), 8: (35.4, 44.9)}, 2: {2: (13.9, 14.0), 8: (25.9, 28.4)}}
    why = _describe({1: 8, 2: 2}, timings)
    assert "1 thread: below 8 rows on ggml's dot products (sgemm/dots ms 2: 23.3/11.4" in why
    assert "2 threads: sgemm from 2 rows (llama.cpp's default) (sgemm/dots ms 2: 13.9/14.0" in why


def test_a_step_takes_the_minimum_of_the_largest_thread_count_measured_at_or_below_it(
        monkeypatch: Any) -> None:
    choice = kernels.Choice({1: 8, 2: 2}, "")
    assert [choice.for_threads(t) for t in (1, 2, 3, 8)] == [8, 2, 2, 2]
    assert kernels.Choice({2: 8}, "").for_threads(1) == DEFAULT_MIN_N
    lib = _FakeLib()
    monkeypatch.setattr(kernels, "_library", lambda: lib)
    seen = []
    for t in (1, 2, 3, 1):
        choice.apply(t)
        seen.append(lib.min_n)
    assert seen == [8, 2, 2, 8]


class _FakeLib:
    """Stands for llama.cpp's CPU library with bastion's gate (the real one: the integration
    test tests/integration/llm/test_batch_kernels.py)."""

    def __init__(self) -> None:
        self.min_n = 2

    def bastion_set_sgemm_min_n(self, n: int) -> None:
        self.min_n = max(2, n)

    def bastion_get_sgemm_min_n(self) -> int:
        return self.min_n


class _FakeAmxLib(_FakeLib):
    """The same, built for a CPU with AMX: with the knob for multi-row VNNI kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.rows_max = 1

    def bastion_amx_rows_built(self) -> int:
        return 1

    def bastion_set_amx_rows_max(self, n: int) -> None:
        self.rows_max = max(1, n)

    def bastion_get_amx_rows_max(self) -> int:
        return self.rows_max


def _setup(monkeypatch: Any, tmp_path: Path, timings: dict[int, tuple[float, float]],
           lib: _FakeLib | None = None) -> Any:
    lib = lib or _FakeLib()
    calls: list[Any] = []
    monkeypatch.setattr(kernels, "_library", lambda: lib)
    monkeypatch.setattr(kernels, "_key", lambda path, threads, kernel="sgemm":
                        f"cpu:{path.name}:{threads}:{kernel}")
    monkeypatch.setattr(kernels, "_verdicts_path", lambda: tmp_path / kernels.VERDICTS)

    def measure(llama: Any, threads: int, path: str = "sgemm") -> dict[int, tuple[float, float]]:
        calls.append(threads if path == "sgemm" else (path, threads))
        return timings

    def check_agree(llama: Any, path: str) -> None:
        calls.append(("agree", path))

    monkeypatch.setattr(kernels, "measure", measure)
    monkeypatch.setattr(kernels, "check_agree", check_agree)
    monkeypatch.delenv(kernels.ENV, raising=False)
    return lib, calls


def test_a_model_is_measured_once_and_the_verdict_kept(monkeypatch: Any, tmp_path: Path) -> None:
    lib, calls = _setup(monkeypatch, tmp_path, {2: (20.0, 10.0), 4: (30.0, 20.0), 8: (30.0, 40.0)})
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    first = kernels.choose(None, model, threads=2, amx_kernels=False)
    # logits compared once, then one thread and the most a step gets timed
    assert first.min_n == {1: 8, 2: 8} and calls == [AGREE, 1, 2]
    again = kernels.choose(None, model, threads=2, amx_kernels=False)  # another worker: kept
    assert again == first and calls == [AGREE, 1, 2]
    kernels.choose(None, model, threads=1, amx_kernels=False)  # other thread counts: measured
    assert calls == [AGREE, 1, 2, AGREE, 1]
    assert (tmp_path / kernels.VERDICTS).stat().st_mode & 0o077 == 0  # private


def test_amx_without_vnni_rows_gpu_and_a_fixed_minimum_are_not_measured(
        monkeypatch: Any, tmp_path: Path) -> None:
    lib, calls = _setup(monkeypatch, tmp_path, {2: (20.0, 10.0)})
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    amx = kernels.choose(None, model, threads=2, amx_kernels=True)  # a build without the rows
    assert amx.for_threads(1) == 2 and amx.path == "amx" and "make install" in amx.why
    assert kernels.choose(None, model, threads=2, amx_kernels=False,
                          n_gpu_layers=10).for_threads(1) == 2
    monkeypatch.setenv(kernels.ENV, "6")
    got = kernels.choose(None, model, threads=2, amx_kernels=False)
    assert got.for_threads(1) == got.for_threads(2) == 6 and kernels.ENV in got.why
    monkeypatch.setenv(kernels.ENV, "x")  # not a number: llama.cpp's default
    assert kernels.choose(None, model, threads=2, amx_kernels=False).for_threads(2) == 2
    assert calls == []


def test_without_the_gate_llama_cpp_keeps_its_default(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setattr(kernels, "_library", lambda: None)
    got = kernels.choose(None, tmp_path / "m.gguf", threads=2, amx_kernels=False)
    assert got.for_threads(2) == 2 and "make install" in got.why


def test_repacked_weights_measure_the_amx_tiles_against_the_vnni_rows(
        monkeypatch: Any, tmp_path: Path) -> None:
    # the AMX Xeon's one-thread steps: tiles 16.4 ms for 2 rows; the rows kernel is what changes
    lib = _FakeAmxLib()
    _, calls = _setup(monkeypatch, tmp_path, {2: (16.4, 11.0), 4: (21.1, 22.0)}, lib)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    got = kernels.choose(None, model, threads=2, amx_kernels=True)
    assert calls == [("agree", "amx"), ("amx", 1), ("amx", 2)]
    assert got.path == "amx" and got.min_n == {1: 4, 2: 4}
    assert "below 4 rows on the VNNI kernels (tiles/vnni ms 2: 16.4/11.0" in got.why
    got.apply(1)
    assert lib.rows_max == 3 and lib.min_n == 2  # up to 3 rows on VNNI; sgemm's gate untouched
    # kept apart from the same model's sgemm verdict (repacking can be turned off)
    assert kernels.choose(None, model, threads=2, amx_kernels=True) == got
    plain = kernels.choose(None, model, threads=2, amx_kernels=False)
    assert plain.path == "sgemm" and calls[3:] == [AGREE, 1, 2]
    monkeypatch.setenv(kernels.ENV, "5")  # a fixed minimum applies to the path in use
    fixed = kernels.choose(None, model, threads=2, amx_kernels=True)
    fixed.apply(2)
    assert lib.rows_max == 4 and "VNNI" in fixed.why


def test_paths_that_disagree_keep_llama_cpps_default(monkeypatch: Any, tmp_path: Path) -> None:
    with pytest.raises(kernels.KernelsDisagree, match="differ by up to 2.5"):
        kernels._compare([10.0, -20.0, 3.0], [10.0, -20.0, 5.5], "amx")
    kernels._compare([10.0, -20.0, 3.0], [10.5, -20.0, 4.9], "amx")  # within 10% of 20
    for bad in ([10.0, -20.0], [10.0, -20.0, float("nan")]):  # a row short; not a number
        with pytest.raises(kernels.KernelsDisagree):
            kernels._compare([10.0, -20.0, 3.0], bad, "sgemm")
    lib = _FakeAmxLib()
    _, calls = _setup(monkeypatch, tmp_path, {}, lib)

    def check_agree(llama: Any, path: str) -> None:
        raise kernels.KernelsDisagree("the VNNI kernels and AMX tiles disagree")

    monkeypatch.setattr(kernels, "check_agree", check_agree)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    got = kernels.choose(None, model, threads=2, amx_kernels=True)
    assert got.for_threads(2) == 2 and "disagree" in got.why and got.path == "amx"
    assert calls == []  # nothing timed
    assert not (tmp_path / kernels.VERDICTS).exists()  # not kept


def test_timings_taken_while_another_process_held_the_cores_are_not_believed() -> None:
    quiet = {2: (16.3, 13.6), 4: (18.8, 19.7), 8: (24.7, 31.4), 16: (38.3, 55.7)}  # Zen 4
    zen5 = {2: (23.6, 11.5), 4: (34.0, 20.4), 8: (40.7, 35.9), 16: (48.5, 68.6)}
    tiles = {2: (16.4, 11.4), 4: (16.0, 20.1)}  # a kernel padding to 32 rows can be about flat
    assert kernels.plausible(quiet) and kernels.plausible(zen5) and kernels.plausible(tiles)
    # `bastion doctor` during a test run: 2 rows slower than 4, then 16 rows 5x 8 rows
    busy = {2: (33.9, 31.6), 4: (23.1, 77.1), 8: (37.8, 43.9), 16: (191.3, 81.3)}
    assert not kernels.plausible(busy)
    assert not kernels.plausible({8: (40.0, 50.0), 16: (101.0, 60.0)})  # > 2.5x per doubling


def test_a_busy_measurement_is_taken_again_once_then_the_default_is_used_and_not_kept(
        monkeypatch: Any, tmp_path: Path) -> None:
    busy = {2: (33.9, 31.6), 4: (23.1, 77.1), 8: (37.8, 43.9), 16: (191.3, 81.3)}
    quiet = {2: (27.6, 18.2), 4: (33.4, 31.5), 8: (45.8, 56.5), 16: (69.7, 103.4)}
    runs = [busy, busy, quiet, quiet, busy, busy, busy, busy]
    lib, calls = _setup(monkeypatch, tmp_path, {})
    monkeypatch.setattr(kernels, "measure", lambda llama, threads, path="sgemm": (
        calls.append(threads), runs.pop(0))[1])
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    got = kernels.choose(None, model, threads=2, amx_kernels=False)  # busy, then quiet: kept
    assert calls == [AGREE, 1, 2, 1, 2] and got.min_n == {1: 4, 2: 4}  # (compared once)
    assert (tmp_path / kernels.VERDICTS).exists()
    (tmp_path / kernels.VERDICTS).unlink()
    again = kernels.choose(None, model, threads=2, amx_kernels=False)  # busy twice: the default
    assert len(calls) == 10 and again.for_threads(1) == again.for_threads(2) == 2
    assert "busy" in again.why and not (tmp_path / kernels.VERDICTS).exists()


class _FakeDotLib(_FakeLib):
    """The same, built for x86 with AVX2: with the knob for the two-row dot products."""

    def __init__(self) -> None:
        super().__init__()
        self.dot_rows = 2  # the build's default

    def bastion_dot2_built(self) -> int:
        return 1

    def bastion_set_dot_rows(self, n: int) -> None:
        self.dot_rows = 2 if n >= 2 else 1

    def bastion_get_dot_rows(self) -> int:
        return self.dot_rows

    def bastion_get_dot2_steps(self) -> int:
        return 0


def test_the_two_row_dot_products_are_named_and_one_row_per_call_is_an_a_b_switch(
        monkeypatch: Any, tmp_path: Path) -> None:
    lib = _FakeDotLib()
    _, calls = _setup(monkeypatch, tmp_path, {2: (20.0, 10.0), 4: (30.0, 20.0), 8: (30.0, 40.0)},
                      lib)
    monkeypatch.delenv(kernels.DOT_ENV, raising=False)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    got = kernels.choose(None, model, threads=1, amx_kernels=False)
    assert lib.dot_rows == 2
    assert "below 8 rows on ggml's dot products (two rows per call)" in got.why
    for value, rows in (("1", 1), ("junk", 1), ("2", 2)):  # junk: left as it is
        monkeypatch.setenv(kernels.DOT_ENV, value)
        kernels.choose(None, model, threads=1, amx_kernels=False)
        assert lib.dot_rows == rows and kernels.dot_rows() == rows
    # a verdict timed with one row per call is kept apart from the build's own
    monkeypatch.undo()  # (_setup's stand-in for _key off: the real one)
    monkeypatch.setattr(kernels, "_library", lambda: lib)
    monkeypatch.setattr("bastion.llm.repack._installed_key", lambda: "lib")
    two = kernels._key(model, (1,))
    lib.dot_rows = 1
    assert kernels._key(model, (1,)) == f"{two}:dots=1"
    assert kernels._key(model, (1,), "amx") == f"{two}:amx"  # (the AMX path has no dots knob)
    assert "two rows" not in _describe({1: 8}, {1: {2: (20.0, 10.0)}})
    # without the build: one row per call, nothing to set
    monkeypatch.setattr(kernels, "_library", lambda: _FakeLib())
    assert kernels.dot_rows() == 1 and not kernels.set_dot_rows(2) and kernels.dot2_steps() == 0
