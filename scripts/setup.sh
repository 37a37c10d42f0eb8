#!/usr/bin/env bash
# Set up backmark on a fresh machine: Fashion-MNIST from Debian, a virtualenv in .venv
# with the CPU build of torch 2.13.0 and backmark (editable) with its test extras.
# Safe to rerun. GPU users: install the torch build you want first, then `pip install -e .`.
set -euo pipefail
cd "$(dirname "$0")/.."
# openssl: the tests start a local RFC 3161 time-stamping authority with `openssl ts -reply`.
if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v openssl >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist openssl
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
echo "setup done: .venv/bin/backmark --help"
