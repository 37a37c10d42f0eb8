#!/bin/bash
# Ownership piracy settled by anchors (issue 11, items 4 and 5), with the command line only:
# an owner anchors his key, trains a marked model on Fashion-MNIST and releases it (anchored);
# a pirate makes his own key (anchored later), embeds it into the owner's released model and
# releases that (anchored); both keys verify on the pirated model; `dispute` names the owner.
# The owner marks for 4 epochs and the pirate embeds gently (lr 0.003, until his mark is in): the
# pirate's fine-tuning erodes the owner's mark, which must keep 25 of 30 to verify at 2^-64.
# The TSA is a local `openssl ts -reply` on 127.0.0.1 (tests/tsa.py): no network is needed.
#
#   bash experiments/dispute.sh OUT        e.g. flock /tmp/backmark-heavy.lock bash experiments/dispute.sh runs/dispute
#
# Output: OUT/log.txt (every command and its output), OUT/dispute.json; about 3 minutes on 2 CPU cores.
set -euo pipefail
OUT=${1:?usage: experiments/dispute.sh OUT}
PY=${PYTHON:-.venv/bin/python}
BM="$PY -m backmark"
mkdir -p "$OUT"
rm -rf "$OUT/owner" "$OUT/pirate" "$OUT/tsa" "$OUT/log.txt"
export no_proxy=127.0.0.1,localhost
# the local TSA: serve until this script ends
$PY -c "
import sys, time; sys.path.insert(0, '.')
from pathlib import Path
from tests.tsa import LocalTSA
with LocalTSA.create(Path('$OUT/tsa'), name='Local TSA').serve() as url:
    Path('$OUT/tsa/url').write_text(url); time.sleep(3600)
" &
TSA_PID=$!
trap 'kill $TSA_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$OUT/tsa/url" ] && break; sleep 0.1; done
URL=$(cat "$OUT/tsa/url")
ROOTS=$OUT/tsa/root.pem
run() { echo "\$ backmark $*" | sed "s#$OUT/##g" >> "$OUT/log.txt"; rc=0; $BM "$@" >> "$OUT/log.txt" 2>&1 || rc=$?; echo "(exit $rc)" >> "$OUT/log.txt"; return 0; }
DATA=(--dataset fashion-mnist --train-size 2000 --test-size 400 --seed 0 -k 64 --batch-size 128 -q)
run keygen --out "$OUT/owner" --size 30 --owner "the owner" --tsa "$URL"
run train "${DATA[@]}" --epochs 4 --lr 0.05 --watermark "$OUT/owner/marking-key.json" --out "$OUT/owner/released.safetensors"
run release --model "$OUT/owner/released.safetensors" --marking-key "$OUT/owner/marking-key.json" --tsa "$URL" --tsa-roots "$ROOTS" --out "$OUT/owner/release.json"
sleep 1  # genTime has whole seconds: the pirate acts after the release
run keygen --out "$OUT/pirate" --size 30 --owner "the pirate" --tsa "$URL"
run embed --model "$OUT/owner/released.safetensors" "${DATA[@]}" --epochs 6 --lr 0.003 --schedule constant --watermark "$OUT/pirate/marking-key.json" --out "$OUT/pirate/pirated.safetensors"
run release --model "$OUT/pirate/pirated.safetensors" --marking-key "$OUT/pirate/marking-key.json" --tsa "$URL" --tsa-roots "$ROOTS" --out "$OUT/pirate/release.json"
for who in owner pirate; do
  run verify --model "$OUT/pirate/pirated.safetensors" --marking-key "$OUT/$who/marking-key.json" --verification-key "$OUT/$who/verification-key.json"
  run verify --model "$OUT/owner/released.safetensors" --marking-key "$OUT/$who/marking-key.json" --verification-key "$OUT/$who/verification-key.json"
done
run dispute --suspect "$OUT/pirate/pirated.safetensors" --party "$OUT/pirate" --party "$OUT/owner" --tsa-roots "$ROOTS"
run dispute --suspect "$OUT/pirate/pirated.safetensors" --party "$OUT/pirate" --party "$OUT/owner"
$BM dispute --suspect "$OUT/pirate/pirated.safetensors" --party "$OUT/pirate" --party "$OUT/owner" --tsa-roots "$ROOTS" --json > "$OUT/dispute.json" || true
cat "$OUT/log.txt"
