#!/usr/bin/env bash
# Set up backmark on a fresh machine: Fashion-MNIST from Debian, a virtualenv in .venv
# with the CPU build of torch 2.13.0 and backmark (editable) with its test extras.
# Safe to rerun. GPU users: install the torch build you want first, then `pip install -e .`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages: the data set; headless Chromium (the report page's screenshot test) and
# poppler-utils (pdftoppm: experiments/report_pictures.sh renders a report PDF's first page);
# openssl (the tests start a local RFC 3161 time-stamping authority with `openssl ts -reply`).
NEED=""
[ -d /usr/share/datasets/fashion-mnist ] || NEED="$NEED dataset-fashion-mnist"
command -v chromium >/dev/null || NEED="$NEED chromium"
command -v pdftoppm >/dev/null || NEED="$NEED poppler-utils"
command -v openssl >/dev/null || NEED="$NEED openssl"
if [ -n "$NEED" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq $NEED
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
echo "setup done: .venv/bin/backmark --help"
