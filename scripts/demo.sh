#!/usr/bin/env bash
# The demo `make demo` runs after installing: configure this machine, then give the agent a task
# on the shipped local model that needs a tool call (list and count the files of a sample folder).
# Usage: scripts/demo.sh [PYTHON]   (default .venv/bin/python; BASTION_HOME is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False
bastion() { "$PY" -m bastion "$@"; }

echo "== bastion init --yes   (detects the hardware, writes the config the first time)"
bastion init --yes

# The task runs in its own workspace holding a fresh copy of examples/sample, so the agent's
# file tools see exactly those five files (agent.workspace, set here through its env override).
HOME_DIR="$("$PY" -c 'from bastion.config import paths; print(paths.home())')"
export BASTION_AGENT__WORKSPACE="$HOME_DIR/demo-workspace"
rm -rf "$BASTION_AGENT__WORKSPACE"
cp -r examples/sample "$BASTION_AGENT__WORKSPACE"
echo "== workspace: $BASTION_AGENT__WORKSPACE (a copy of examples/sample)"

# Same answer on every run: the demo turn does not recall earlier runs (memory off for it only;
# with a 135M model, snippets of earlier answers in the context crowd out the tool call).
export BASTION_MEMORY__ENABLED=false

QUESTION="How many files are in my workspace? List them."
echo "== bastion ask \"$QUESTION\""
echo "   tool steps: → call, ✓ result (stderr); the answer streams from the shipped model"
bastion ask --stream "$QUESTION"
echo "== done. Next: bastion chat | bastion doctor | bastion serve"
