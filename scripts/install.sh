#!/usr/bin/env bash
# Install GEA and everything it needs into ./.venv on a fresh Debian 12 machine.
# Idempotent: rerunning it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# Headless rendering (EGL / OSMesa) for MuJoCo, Chromium and its driver for MiniWoB++,
# ffmpeg for rollout videos.
DEBIAN_PACKAGES="chromium chromium-driver libegl1 libosmesa6 libgl1 ffmpeg"
missing=$(for p in $DEBIAN_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first and pinned: 2.13.0 resolves to the CPU build; an unpinned torch pulls a multi-GB CUDA build.
$PIP install -q torch==2.13.0
$PIP install -q -e ".[test]"
# miniwob 1.1.0 declares gymnasium>=1.2.3, but ray[rllib] 2.60.0 pins gymnasium==1.2.2.
# miniwob runs on 1.2.2 (its MiniWoB++ tasks pass tests/test_miniwob_adapter.py), so it is
# installed without its declared dependencies; the ones it uses (selenium, pillow, numpy,
# gymnasium) come from setup.cfg.
$PIP install -q --no-deps miniwob==1.1.0

# pip check reports exactly that declared conflict; anything else is a real problem.
unexpected=$($PIP check 2>&1 | grep -v "^miniwob 1.1.0 has requirement gymnasium>=1.2.3" | grep -v "^No broken requirements" || true)
if [ -n "$unexpected" ]; then
    echo "pip check found unexpected dependency problems:" >&2
    echo "$unexpected" >&2
    exit 1
fi
echo "GEA installed in $(pwd)/.venv"
