#!/usr/bin/env bash
# The CIFAR-10 reproductions on a GPU, in one command (docs/results/paper-comparison.md).
#
#   bash experiments/gpu.sh                         # all three configs, full budgets, into runs/gpu/
#   bash experiments/gpu.sh --out DIR --max-epochs 6 --only cifar10,cifar10-paper-triggers
#
# Configs (experiments/configs/NAME.json):
#   cifar10                 cifar-small on the CIFAR-10 JPEG copy, abstract triggers; transfer between class halves
#   cifar10-paper-triggers  the same with the paper's own 100 trigger images and labels (center crop, committed labels)
#   cifar10-resnet18        the paper's setting: resnet18-cifar, 60 epochs, lr 0.1 x0.1 every 20, attacks 20 epochs at lr 0.01
#
# Data: $BACKMARK_DATA holds cifar10-jpg/ and adi2018-trigger-set/ (default here: ../shared/data, set below).
# Each config writes DIR/NAME/{results.json,report.md,figure6.png,attacks.png,pvalues.png} and DIR/NAME.log;
# DIR/times.txt gets one line per config with its wall time. Options:
#   --out DIR         output folder [runs/gpu]
#   --max-epochs N    cap every step's epochs (a reduced run; recorded in results.json)
#   --only A,B        run only these configs
#   --device D        torch device [cuda]
#   --resume          reuse models an interrupted run saved (per config folder)
#   --quick           each config's quick mode (small subsets, 1-2 epochs): checks the pipeline, not a result
# Environment: BACKMARK (the command, default "python3 -m backmark"), BACKMARK_DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
export BACKMARK_DATA=${BACKMARK_DATA:-$(cd .. && pwd)/shared/data}
out=runs/gpu
only=cifar10,cifar10-paper-triggers,cifar10-resnet18
device=cuda
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --max-epochs) extra+=(--max-epochs "$2"); shift 2 ;;
    --only) only=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --resume) extra+=(--resume); shift ;;
    --quick) extra+=(--quick); shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
bm=${BACKMARK:-python3 -m backmark}
mkdir -p "$out"
status=0
for name in ${only//,/ }; do
  cfg=experiments/configs/$name.json
  [ -f "$cfg" ] || { echo "no config $cfg" >&2; exit 2; }
  start=$(date +%s)
  echo "== $name ($(date -u +%H:%M:%S))"
  if $bm reproduce --config "$cfg" --out "$out/$name" --device "$device" --force -q "${extra[@]}" > "$out/$name.log" 2>&1; then
    echo "$name: $(( $(date +%s) - start )) s" | tee -a "$out/times.txt"
  else
    status=1
    echo "$name: FAILED after $(( $(date +%s) - start )) s (see $out/$name.log)" | tee -a "$out/times.txt"
    tail -20 "$out/$name.log" >&2
  fi
done
exit $status
