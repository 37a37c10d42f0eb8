#!/bin/bash
# PVerify on Fashion-MNIST (issue 4): one key with 10 trigger sets of 100, a NO-WM model and a
# FROMSCRATCH model marked with all 1000 triggers (same recipe and seed), then one-time
# verification of every set (10 verifier nonces -> 10 distinct sets) on both models.
#
#   bash experiments/pverify.sh OUT [EPOCHS] [K]        e.g. bash experiments/pverify.sh runs/pverify 4 16
#
# Steps whose output exists are skipped (train steps resume), so an interrupted run can be restarted.
# Results: OUT/{nowm,wm}-eE-kK.json (training history), OUT/pverify-*.log, OUT/report-* (signed reports).
set -euo pipefail
OUT=${1:?usage: experiments/pverify.sh OUT [EPOCHS] [K]}
EPOCHS=${2:-3}
K=${3:-16}
BM=${BACKMARK:-.venv/bin/backmark}
KEYS=$OUT/keys
mkdir -p "$OUT"
[ -f "$KEYS/verification-key.json" ] || $BM keygen --dataset fashion-mnist --sets 10 --size 100 --out "$KEYS"
train() {  # train NAME [extra args]
  local name=$1; shift
  [ -s "$OUT/$name.json" ] && return 0
  $BM train --dataset fashion-mnist --seed 0 --epochs "$EPOCHS" "$@" --out "$OUT/$name.safetensors" --resume --json -q > "$OUT/$name.json.tmp"
  mv "$OUT/$name.json.tmp" "$OUT/$name.json"
}
train "nowm-e$EPOCHS"
train "wm-e$EPOCHS-k$K" -k "$K" --watermark "$KEYS/marking-key.json"
pverify_all() {  # pverify_all MODEL TAG: every set once, then the spent log
  local log=$OUT/spent-$2.jsonl
  [ -f "$OUT/pverify-$2.log" ] && return 0
  for i in $(seq 1 10); do
    rc=0
    $BM pverify --model "$1" --marking-key "$KEYS/marking-key.json" --verification-key "$KEYS/verification-key.json" \
      --nonce "verifier-nonce-$i" --verifier-key "$OUT/verifier-key.pem" --spent-log "$log" --report "$OUT/report-$2-$i" --force --json > "$OUT/report-$2-$i.out.json" || rc=$?
    echo "nonce verifier-nonce-$i: exit $rc"
  done > "$OUT/pverify-$2.log.tmp"
  $BM spent "$log" --verification-key "$KEYS/verification-key.json" >> "$OUT/pverify-$2.log.tmp"
  mv "$OUT/pverify-$2.log.tmp" "$OUT/pverify-$2.log"
}
pverify_all "$OUT/wm-e$EPOCHS-k$K.safetensors" "wm-e$EPOCHS-k$K"
pverify_all "$OUT/nowm-e$EPOCHS.safetensors" "nowm-e$EPOCHS"
cat "$OUT/pverify-wm-e$EPOCHS-k$K.log" "$OUT/pverify-nowm-e$EPOCHS.log"
