"""The cause of llama.cpp's AMX crash, and bastion's build fix for it, on the real compiler and CPU.

llama.cpp fills a 64-byte AMX tile configuration and loads it with ``_tile_loadconfig``
(ggml-cpu/amx/mmq.cpp ``ggml_tile_config_init``). GCC 12 declares that intrinsic's memory
operand as 8 bytes, drops the stores to the rest as dead, and ``ldtilecfg`` faults on garbage.
``scripts/llama-cpp/amx_tile_config_fix.h`` (force-included when bastion builds llama-cpp-python)
redefines it over all 64 bytes. This test compiles llama.cpp's own pattern both ways.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from bastion.hardware.detect import cpu_flags

FIX = Path(__file__).resolve().parents[3] / "scripts" / "llama-cpp" / "amx_tile_config_fix.h"
AMX = {"amx_tile", "amx_int8"} <= set(cpu_flags())

# ggml_tile_config_init as llama.cpp 0.3.36 vendors it, then one int8 tile multiply; the stack
# under it is dirtied first, as a real call chain leaves it
SOURCE = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

struct tile_config_t {
    uint8_t palette_id = 0;
    uint8_t start_row = 0;
    uint8_t reserved_0[14] = {0};
    uint16_t colsb[16] = {0};
    uint8_t rows[16] = {0};
};

__attribute__((noinline)) void dirty_stack(void) {
    volatile unsigned char junk[4096];
    memset((void *)junk, 0xff, sizeof junk);
}

__attribute__((noinline)) void tile_config_init(void) {
    alignas(64) tile_config_t tc = {};
    tc.palette_id = 1;
    tc.start_row = 0;
    tc.rows[0] = 16; tc.colsb[0] = 64;
    tc.rows[1] = 16; tc.colsb[1] = 64;
    tc.rows[2] = 16; tc.colsb[2] = 64;
    _tile_loadconfig(&tc);
}

int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) {
        return 3;
    }
    static int8_t a[16 * 64], b[16 * 64];
    static int32_t c[16 * 16];
    memset(a, 1, sizeof a);
    memset(b, 2, sizeof b);
    dirty_stack();
    tile_config_init();
    _tile_zero(0);
    _tile_loadd(1, a, 64);
    _tile_loadd(2, b, 64);
    _tile_dpbssd(0, 1, 2);
    _tile_stored(0, c, 64);
    _tile_release();
    printf("%d\n", c[0]);
    return 0;
}
"""

pytestmark = [
    pytest.mark.skipif(not AMX, reason="this CPU has no AMX: the AMX tile crash cannot happen "
                                       "here"),
    pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to build with"),
]


def _gcc_major() -> int:
    out = subprocess.run(["g++", "-dumpfullversion"], capture_output=True, text=True,
                         check=True).stdout
    return int(re.match(r"\d+", out.strip()).group())  # type: ignore[union-attr]


def _build_and_run(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "tile.cpp"
    src.write_text(SOURCE)
    exe = tmp_path / name
    subprocess.run(["g++", "-O2", "-mamx-tile", "-mamx-int8", *extra, str(src), "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    return subprocess.run([str(exe)], capture_output=True, text=True, timeout=30, check=False)


def test_the_fix_header_makes_the_tile_config_load_and_multiply(tmp_path: Path) -> None:
    done = _build_and_run(tmp_path, "fixed", "-include", str(FIX))
    assert done.returncode == 0, done
    assert done.stdout.strip() == str(64 * 1 * 2)  # 64 int8 products of 1 x 2 per element


@pytest.mark.skipif(not AMX or shutil.which("g++") is None or _gcc_major() >= 13,
                    reason="this compiler does not drop the tile configuration's stores")
def test_without_the_fix_gcc_drops_the_tile_config_and_the_cpu_faults(tmp_path: Path) -> None:
    done = _build_and_run(tmp_path, "plain")
    assert done.returncode in (-signal.SIGSEGV, -signal.SIGILL), done
