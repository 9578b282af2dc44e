#!/usr/bin/env bash
# Builds llama-cpp-python once per machine with bastion's AMX fix (amx_tile_config_fix.h, next to
# this script) and its sgemm gate (sgemm_gate.h, into the C files: bastion.llm.kernels sets it),
# and installs that wheel into PYTHON's environment unless it is there already.
# The wheel's folder is named after the two headers' hash, so pip's own cache (a wheel built
# without them, keyed by the sdist's address alone) is never taken for it; a venv that holds
# another build of the same version (pip would call it satisfied) gets this one.
# Usage: wheel.sh PYTHON
set -euo pipefail
PY="${1:-.venv/bin/python}"
VERSION=0.3.36
here="$(cd "$(dirname "$0")" && pwd)"
key="$( (cat "$here/amx_tile_config_fix.h" "$here/sgemm_gate.h"; echo "$VERSION ${CMAKE_ARGS:-}") | sha256sum | cut -c1-16)"
root="${BASTION_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bastion/wheels}"
dir="$root/llama-cpp-python-$VERSION-$key"
if ! ls "$dir"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  mkdir -p "$root"
  tmp="$(mktemp -d "$root/.build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  cp "$here/amx_tile_config_fix.h" "$tmp/fix.h"  # paths without spaces for CMAKE_ARGS
  cp "$here/sgemm_gate.h" "$tmp/gate.h"
  echo "building llama-cpp-python $VERSION with bastion's AMX fix and sgemm gate (once per machine, ~5-8 min on 2 cores)" >&2
  CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_CXX_FLAGS=\"-include $tmp/fix.h\" -DCMAKE_C_FLAGS=\"-include $tmp/gate.h\"" \
    "$PY" -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -w "$tmp/out" >&2
  rm -rf "$dir" && mv "$tmp/out" "$dir"
fi
stamp="$(dirname "$PY")/../.llama-cpp-wheel"
if [ "$(cat "$stamp" 2>/dev/null)" != "$key" ]; then
  "$PY" -m pip install -q --no-deps --force-reinstall "$dir"/llama_cpp_python-"$VERSION"-*.whl
  echo "$key" > "$stamp"
fi
