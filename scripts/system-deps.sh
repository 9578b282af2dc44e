#!/usr/bin/env bash
# Installs the Debian packages the tests need (bubblewrap sandboxes, speech tools, network tools).
# Idempotent: only missing packages are installed. Needs root (CI runs as root) or sudo.
set -euo pipefail
# qemu-user: an emulated CPU without this one's AVX-512 (tests/integration/cli/test_native_build.py,
# tests/integration/llm/test_two_row_dots.py); the aarch64 cross compilers: bastion's llama.cpp
# patches still build for ARM (tests/integration/llm/test_arm_build.py)
pkgs=(bubblewrap procps iproute2 espeak-ng sox libportaudio2 runsc gcc g++ patch libc6-dev nftables dnsmasq-base podman runc catatonit debootstrap docker.io tini rsyslog softhsm2 chromium socat haproxy qemu-user gcc-aarch64-linux-gnu g++-aarch64-linux-gnu)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Node.js + npm (for the MCP conformance suite): any install will do (nodesource's nodejs ships npm
# and conflicts with Debian's npm package), so only ask apt when no npm is on PATH.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
