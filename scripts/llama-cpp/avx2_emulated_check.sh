#!/usr/bin/env bash
# Developer check, not run by `make test`: bastion on a CPU with AVX2 but no AVX-512 (AMD Zen 2/3,
# Intel's client cores), emulated by qemu-user (a Haswell; scripts/system-deps.sh installs
# qemu-user), on a machine that has AVX-512.
#   1. builds bastion's llama-cpp-python for AVX2 alone (GGML_NATIVE=OFF, no AVX-512, no VNNI,
#      no AMX) with wheel.sh into a venv of its own (once, into DIR; ~5 min on 2 cores);
#   2. on the emulated Haswell, the real model's decode steps of 2, 3 and 4 sequences on the
#      dot products: the logits with two rows per call against one row per call (bit for bit),
#      and the multiplies that took two rows, for the Q8_0 copy and the shipped Q4_1 file;
#   3. `bastion ask`, the whole run (model in process) on the emulated Haswell (~3-4 min).
# (The build of this machine, -march=native with AVX-512, dies there with SIGILL: that is
# tests/integration/cli/test_native_build.py.)
# Usage: scripts/llama-cpp/avx2_emulated_check.sh [DIR]   (run from the repository root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:-${TMPDIR:-/tmp}/bastion-avx2-emulated}"
command -v qemu-x86_64 >/dev/null || { echo "no qemu-x86_64: scripts/system-deps.sh installs qemu-user" >&2; exit 2; }
py="$repo/.venv/bin/python"
if [ ! -x "$dir/venv/bin/python" ]; then
  python3 -m venv "$dir/venv"
fi
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" \
  BASTION_WHEEL_CACHE="$dir/wheels" bash "$here/wheel.sh" "$dir/venv/bin/python"
site="$("$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
lib="$site/llama_cpp/lib/libggml-cpu.so"
echo "AVX-512 instructions in the build's CPU library: $(objdump -d "$lib" | grep -c zmm || true)"
echo "its record: $(cat "$site/llama_cpp/bastion_build.json")"
export PYTHONPATH="$site:$repo/src" HF_HUB_OFFLINE=1 NO_COLOR=1
qemu=(qemu-x86_64 -cpu Haswell-v4)
"$py" - "$dir/model_check.py" <<'PY'
import re, sys
text = open("tests/integration/llm/test_two_row_dots.py", encoding="utf-8").read()
open(sys.argv[1], "w").write(re.search(r'_MODEL = """\n(.*?)"""', text, re.S).group(1))
PY
q8="$("$py" - <<'PY'
from bastion.llm.embedded import shipped_model_path
from bastion.llm.source import prepare_source
print(prepare_source(shipped_model_path(), repack=False)[1].path)
PY
)"
for file in "$q8" "$("$py" -c 'from bastion.llm.embedded import shipped_model_path as s; print(s())')"; do
  echo "== $(basename "$file"), 1 thread, on the emulated Haswell: rows -> identical, [one-row, two-row] multiplies"
  "${qemu[@]}" "$py" "$dir/model_check.py" "$file" 1 2>/dev/null | tail -1
done
home="$dir/home"
rm -rf "$home" && mkdir -p "$home"
export BASTION_HOME="$home"
"$py" -m bastion init --yes >/dev/null 2>&1
"$py" -m bastion config set model.isolation in_process >/dev/null 2>&1
echo "== bastion ask on the emulated Haswell (the model in process)"
time "${qemu[@]}" "$py" -m bastion ask "What is 2+2? Answer with one number." 2>/dev/null
