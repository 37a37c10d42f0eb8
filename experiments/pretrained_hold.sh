#!/bin/bash
# Does holding the watermark longer during PRETRAINED embedding make it survive fine-tuning attacks?
# Fashion-MNIST, fmnist-cnn: the NO-WM model and key of a reproduction run (experiments/configs/fmnist.json),
# embedded with `backmark embed --hold H` for each H, then FTAL and RTAL at the paper's budget
# (the victim's data, 3 epochs = the training's, lr 0.01), scored black-box and, for RTAL, with the kept layer.
#
#   bash experiments/pretrained_hold.sh RUN OUT [HOLDS...]    e.g. bash experiments/pretrained_hold.sh runs/reproduce-fmnist runs/hold 0 3
set -euo pipefail
RUN=${1:?usage: pretrained_hold.sh RUN OUT [HOLDS...]}; OUT=${2:?}; shift 2
HOLDS=${*:-0 3}
BM=${BACKMARK:-.venv/bin/backmark}
K=$RUN/keys/marking-key.json
mkdir -p "$OUT"
for H in $HOLDS; do
  PT=$OUT/pretrained-hold$H.safetensors
  [ -f "$PT" ] || $BM embed --model "$RUN/models/nowm.safetensors" --watermark "$K" --hold "$H" --out "$PT" --json -q > "$OUT/pretrained-hold$H.json"
  for A in ftal rtal; do
    [ -f "$OUT/$A-hold$H.json" ] && continue
    $BM attack $A --model "$PT" --out "$OUT/$A-hold$H.safetensors" --epochs 3 --lr 0.01 --keep-output-layer "$OUT/$A-hold$H-fc.safetensors" \
      --marking-key "$K" --json -q > "$OUT/$A-hold$H.json.tmp" && mv "$OUT/$A-hold$H.json.tmp" "$OUT/$A-hold$H.json"
  done
done
