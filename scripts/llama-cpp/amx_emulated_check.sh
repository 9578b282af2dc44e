#!/usr/bin/env bash
# Developer check, not run by `make test`: the AMX backend's VNNI rows (amx_small_batch.patch)
# inside the real llama.cpp on a CPU WITHOUT AMX but with AVX-512 VNNI (AMD Zen 4/5, Intel Ice
# Lake...), where the AMX backend is normally compiled out.
#   1. builds the patched llama.cpp with AMX compiled in (once, into BUILD; ~6 min on 2 cores);
#   2. loads the shipped model through llama-cpp-python on those libraries, with an LD_PRELOAD
#      shim that answers ggml's request for AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM) with
#      success, so the AMX buffer type loads the repacked weights;
#   3. sends every batch up to 31 rows to the VNNI rows (the tiles, which need AMX, never run:
#      batches stay at 16 rows) and prints: multiplies that took the rows, the first row's logits
#      against a one-row step, the logits against the same build without repacking, step times.
# Usage: scripts/llama-cpp/amx_emulated_check.sh [BUILD]   (run from the repository root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-${TMPDIR:-/tmp}/bastion-amx-emulated}"
grep -qw avx512_vnni /proc/cpuinfo || { echo "this CPU lacks AVX-512 VNNI: nothing to check" >&2; exit 2; }
if [ ! -f "$build/bin/libllama.so" ]; then
  mkdir -p "$build/src"
  .venv/bin/python -m pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$build/src"
  tar xzf "$build"/src/llama_cpp_python-0.3.36.tar.gz -C "$build/src"
  src="$build/src/llama_cpp_python-0.3.36"
  patch -s -p1 --forward -d "$src" < "$here/amx_small_batch.patch"
  cmake -S "$src/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
    -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_SERVER=OFF "-DCMAKE_CXX_FLAGS=-include $here/amx_tile_config_fix.h" >/dev/null
  cmake --build "$build" -j"$(nproc)" --target llama >/dev/null
fi
cat > "$build/shim.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/syscall.h>
long syscall(long n, ...) {  /* ARCH_REQ_XCOMP_PERM for tile data: "granted" */
    va_list ap; va_start(ap, n);
    long a[6]; for (int i = 0; i < 6; ++i) a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_arch_prctl && a[0] == 0x1023) return 0;
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
C
gcc -O2 -shared -fPIC "$build/shim.c" -o "$build/shim.so" -ldl
cat > "$build/check.py" <<'PY'
import ctypes, json, sys, time
from llama_cpp import llama_cpp as C
from bastion.llm.embedded import load_llama, shipped_model_path
repack = sys.argv[1] == "amx"
llm = load_llama(shipped_model_path(), n_ctx=512, n_threads=1, n_threads_batch=1, repack=repack,
                 n_seq=4, n_batch=16, n_ubatch=16)
lib = next(ctypes.CDLL(ln.split()[-1]) for ln in open("/proc/self/maps") if "libggml-cpu.so" in ln)
lib.bastion_get_amx_rows_steps.restype = ctypes.c_long
lib.bastion_set_amx_rows_max(31)  # every batch here on the rows: this CPU has no tiles
ctx, nv = llm._ctx.ctx, llm.n_vocab()
mem, batch = C.llama_get_memory(ctx), C.llama_batch_init(16, 0, 4)
def decode(n, seqs):
    batch.n_tokens = n
    for i in range(n):
        batch.token[i], batch.pos[i] = 1000 + 7 * i, 0 if seqs else i
        batch.n_seq_id[i], batch.seq_id[i][0], batch.logits[i] = 1, i if seqs else 0, True
    assert C.llama_decode(ctx, batch) == 0
    out = list(C.llama_get_logits(ctx)[:n * nv])
    for s in range(4):
        C.llama_memory_seq_rm(mem, s, 0, -1)
    return out
s0 = lib.bastion_get_amx_rows_steps()
four = decode(4, True)
out = {"rows_multiplies_per_4row_decode": lib.bastion_get_amx_rows_steps() - s0,
       "first_row_vs_alone": max(abs(a - b) for a, b in zip(decode(1, True), four[:nv])),
       "logits": four[::97]}
for n in (1, 2, 3, 4):
    best = 1e9
    for _ in range(15):
        t = time.perf_counter(); decode(n, True); best = min(best, time.perf_counter() - t)
    out[f"step_ms_{n}"] = round(best * 1000, 2)
print(json.dumps(out))
PY
run() { LLAMA_CPP_LIB_PATH="$build/bin" PYTHONPATH=src .venv/bin/python "$build/check.py" "$1"; }
amx="$(LD_PRELOAD="$build/shim.so" run amx 2>/dev/null | tail -1)"
plain="$(run plain 2>/dev/null | tail -1)"
.venv/bin/python - "$amx" "$plain" <<'PY'
import json, sys
a, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
diff = max(abs(x - y) for x, y in zip(a["logits"], p["logits"]))
print(f"repacked multiplies on the VNNI rows per 4-row decode: {a['rows_multiplies_per_4row_decode']}")
print(f"first row of a 4-sequence batch against the token alone: max logit difference {a['first_row_vs_alone']}")
print(f"against the same build without repacking: max logit difference {diff:.3f} of {max(map(abs, p['logits'])):.1f}")
print("step ms (1-4 rows), rows:      " + " / ".join(str(a[f"step_ms_{n}"]) for n in (1, 2, 3, 4)))
print("step ms (1-4 rows), no repack: " + " / ".join(str(p[f"step_ms_{n}"]) for n in (1, 2, 3, 4)))
PY
