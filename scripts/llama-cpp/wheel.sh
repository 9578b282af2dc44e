#!/usr/bin/env bash
# Builds llama-cpp-python once per machine with bastion's AMX fix (amx_tile_config_fix.h, next to
# this script), its sgemm gate (sgemm_gate.h, into the C files), and the patches beside it,
# applied to the sdist's llama.cpp in name order: multi-row VNNI kernels for AMX CPUs
# (amx_small_batch.patch) and two-row dot products on x86 (two_row_dots.patch);
# bastion.llm.kernels sets their knobs. It installs that wheel into PYTHON's environment unless
# it is there already. The wheel's folder is named after these files' hash, so pip's own cache
# (a wheel built without them, keyed by the sdist's address alone) is never taken for it; a venv
# that holds another build of the same version (pip would call it satisfied) gets this one. The
# patched kernels' sources are kept beside the wheel for tests/integration/llm/test_amx_rows.py.
# The build is native (-march=native, llama.cpp's default: the fastest code for this CPU), so it
# dies with SIGILL on a CPU without this one's instruction sets: the key also hashes those
# (src/bastion/hardware/isa.py), so a shared home or a copied cache gives each CPU kind its own
# build, and the wheel carries them (llama_cpp/bastion_build.json), so bastion refuses a venv
# moved to a CPU that lacks them with the fix instead of crashing (bastion.llm.native_build).
# Usage: wheel.sh [--key] PYTHON   (--key: print the cache key only)
#        wheel.sh --sources PYTHON DIR   (the patched llama-cpp-python sources into DIR, for a build
#                                         of another kind: scripts/llama-cpp/arm_emulated_check.sh)
set -euo pipefail
key_only=
sources_to=
if [ "${1:-}" = "--key" ]; then key_only=1; shift; fi
if [ "${1:-}" = "--sources" ]; then sources_to="${3:?usage: wheel.sh --sources PYTHON DIR}"; shift; fi
PY="${1:-.venv/bin/python}"
VERSION=0.3.36
here="$(cd "$(dirname "$0")" && pwd)"
isa_py="$here/../../src/bastion/hardware/isa.py"
patches=("$here"/*.patch)
key="$( (cat "$here/amx_tile_config_fix.h" "$here/sgemm_gate.h" "${patches[@]}"
         echo "$VERSION ${CMAKE_ARGS:-}"; "$PY" "$isa_py") | sha256sum | cut -c1-16)"
if [ -n "$key_only" ]; then echo "$key"; exit 0; fi
patched_sources() {  # the sdist, unpacked into $1/src with bastion's patches; prints its path
  "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$1/sdist" >&2
  mkdir "$1/src" && tar xzf "$1"/sdist/llama_cpp_python-"$VERSION".tar.gz -C "$1/src"
  local src="$1/src/llama_cpp_python-$VERSION" p
  for p in "${patches[@]}"; do
    if command -v patch >/dev/null 2>&1; then
      patch -s -p1 --forward -d "$src" < "$p"
    else
      (cd "$src" && git apply -p1 "$p")
    fi
  done
  echo "$src"
}
if [ -n "$sources_to" ]; then
  mkdir -p "$sources_to" && patched_sources "$(cd "$sources_to" && pwd)"
  exit 0
fi
root="${BASTION_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bastion/wheels}"
dir="$root/llama-cpp-python-$VERSION-$key"
if ! ls "$dir"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  mkdir -p "$root"
  tmp="$(mktemp -d "$root/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  cp "$here/amx_tile_config_fix.h" "$tmp/fix.h"  # paths without spaces for CMAKE_ARGS
  cp "$here/sgemm_gate.h" "$tmp/gate.h"
  echo "building llama-cpp-python $VERSION with bastion's AMX fix, sgemm gate, AMX rows and two-row dots (once per machine, ~5-8 min on 2 cores)" >&2
  src="$(patched_sources "$tmp")"
  portable=; case " ${CMAKE_ARGS:-} " in *GGML_NATIVE=OFF*) portable=--portable;; esac
  "$PY" "$isa_py" --record $portable > "$src/llama_cpp/bastion_build.json"
  CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_CXX_FLAGS=\"-include $tmp/fix.h\" -DCMAKE_C_FLAGS=\"-include $tmp/gate.h\"" \
    "$PY" -m pip wheel -q --no-deps --no-cache-dir "$src" -w "$tmp/out" >&2
  ggml="$src/vendor/llama.cpp/ggml"
  mkdir -p "$tmp/out/ggml/src"
  cp -r "$ggml/include" "$tmp/out/ggml/" && cp "$ggml"/src/*.h "$tmp/out/ggml/src/"
  cp -r "$ggml/src/ggml-cpu" "$tmp/out/ggml/src/"
  rm -rf "$dir" && mv "$tmp/out" "$dir"
fi
stamp="$(dirname "$PY")/../.llama-cpp-wheel"
if [ "$(cat "$stamp" 2>/dev/null)" != "$key" ]; then
  "$PY" -m pip install -q --no-deps --force-reinstall "$dir"/llama_cpp_python-"$VERSION"-*.whl
  echo "$key" > "$stamp"
fi
echo "$dir/ggml" > "$(dirname "$PY")/../.llama-cpp-src"  # (where the kernels' test finds them)
