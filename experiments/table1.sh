#!/usr/bin/env bash
# Table 1 analogue through the CLI: NO-WM, FROMSCRATCH and PRETRAINED with one recipe.
#   bash experiments/table1.sh DATASET OUTDIR [extra train options...]
# e.g. bash experiments/table1.sh fashion-mnist runs/table1-fmnist
#      bash experiments/table1.sh cifar10-jpg runs/table1-cifar
#      KEYS=runs/paper-keys bash experiments/table1.sh cifar10-jpg runs/table1-paper --device cuda
# Writes OUTDIR/*.json (one per step) and OUTDIR/table1.md (made by experiments/table1_summary.py).
set -euo pipefail
dataset=$1; out=$2; shift 2
bm="${BACKMARK:-.venv/bin/backmark}"
mkdir -p "$out"
start=$(date +%s)
# KEYS=DIR reuses an existing key pair (e.g. the paper's trigger set), else a fresh key is made.
keys="${KEYS:-$out/keys}"
[ -n "${KEYS:-}" ] || $bm keygen --dataset "$dataset" --out "$keys" --force --json > "$out/keygen.json"
mk="$keys/marking-key.json"; vk="$keys/verification-key.json"
$bm train --dataset "$dataset" --out "$out/nowm.safetensors" --force --json "$@" > "$out/nowm.json"
$bm train --dataset "$dataset" --watermark "$mk" --out "$out/fromscratch.safetensors" --force --json "$@" > "$out/fromscratch.json"
$bm embed --dataset "$dataset" --model "$out/nowm.safetensors" --watermark "$mk" --out "$out/pretrained.safetensors" --force --json "$@" > "$out/pretrained.json"
for m in nowm fromscratch pretrained; do
  $bm verify --model "$out/$m.safetensors" --marking-key "$mk" --verification-key "$vk" --json > "$out/verify-$m.json" || true
done
echo "{\"seconds\": $(( $(date +%s) - start )), \"dataset\": \"$dataset\", \"args\": \"$*\"}" > "$out/run.json"
"${PYTHON:-.venv/bin/python}" "$(dirname "$0")/table1_summary.py" "$out" > "$out/table1.md"
cat "$out/table1.md"
