#!/usr/bin/env bash
# Installs the system packages and the Python environment the tests need (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if command -v apt-get >/dev/null; then
  need=()
  # libmgba-dev + gcc + libc6-dev: the headless mGBA host the emulator tests compile (tests/emulator).
  # chromium + chromium-driver: the live page's browser test (tests/browser), driven by Selenium.
  for p in lua5.4 lua-socket haproxy libmgba-dev gcc libc6-dev chromium chromium-driver; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
[ -d .venv ] || python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU torch pin first: any looser requirement would pull gigabytes of CUDA wheels.
python -m pip install -q torch==2.13.0
# [eval]: nitrogen-eval's games from PyPI (gymnasium, ale-py, stable-retro, vizdoom; tqdm, pydantic).
python -m pip install -q -e '.[test,bench]' './clients/python[eval]'
