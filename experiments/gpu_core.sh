#!/usr/bin/env bash
# The core results (Table 1 analogues) on one GPU, every run side by side:
#   bash experiments/gpu_core.sh OUTDIR DATA_ROOT PAPER_KEYS
# DATA_ROOT holds fashion-mnist/ (the IDX .gz files) and cifar10-jpg/ (the tarball);
# PAPER_KEYS is a key pair made from the paper's 100 trigger images:
#   backmark keygen --dataset cifar10-jpg --source ../shared/data/adi2018-trigger-set/pics \
#     --labels ../shared/data/adi2018-trigger-set/labels-cifar.txt --crop center --out PAPER_KEYS
# Runs: Fashion-MNIST (fmnist-cnn) and CIFAR-10 JPEG (cifar-small) with fresh abstract keys, the
# CIFAR-10 run with the paper's trigger set, a PRETRAINED recipe sweep, and a ResNet-18 timing probe.
set -uo pipefail
out=$1; data=$2; paper=$3
mkdir -p "$out"
export BACKMARK="${BACKMARK:-python3 -m backmark}" PYTHON="${PYTHON:-python3}" OMP_NUM_THREADS=4
export BACKMARK_CACHE="${BACKMARK_CACHE:-/tmp/backmark-cache}"
# GPU_ARGS / EXTRA: overrides for a dry run on a CPU, e.g. GPU_ARGS="--device cpu" EXTRA="--train-size 500 --epochs 1"
gpu=(${GPU_ARGS:---device cuda --compile off} ${EXTRA:-})
here=$(dirname "$0")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
# Decode the CIFAR JPEG copy once, into the cache, before two runs want it.
$PYTHON -c "from backmark.data import load_dataset; print(load_dataset('cifar10-jpg', '$data/cifar10-jpg').describe())"
bash "$here/table1.sh" fashion-mnist "$out/fmnist" --data-dir "$data/fashion-mnist" "${gpu[@]}" > "$out/fmnist.log" 2>&1 &
fm=$!
bash "$here/table1.sh" cifar10-jpg "$out/cifar" --data-dir "$data/cifar10-jpg" "${gpu[@]}" > "$out/cifar.log" 2>&1 &
KEYS="$paper" bash "$here/table1.sh" cifar10-jpg "$out/cifar-paper" --data-dir "$data/cifar10-jpg" "${gpu[@]}" > "$out/cifar-paper.log" 2>&1 &
# ResNet-18 probe: seconds per epoch of the paper's recipe (fp32 and bf16), 1 epoch each.
for prec in fp32 bf16; do
  $BACKMARK train --dataset cifar10-jpg --data-dir "$data/cifar10-jpg" --model resnet18-cifar --batch-size 100 --lr 0.1 \
    --schedule step --augment -k 2 --out "$out/probe-$prec.safetensors" --precision $prec "${gpu[@]}" --epochs 1 \
    --force --json > "$out/probe-$prec.json" 2> "$out/probe-$prec.log"
done &
wait $fm
# PRETRAINED sweep on Fashion-MNIST: (k, lr) with a constant LR, stopping once all triggers are learnt.
mk="$out/fmnist/keys/marking-key.json"
for kl in "2 0.01" "2 0.02" "4 0.01" "8 0.01" "2 0.005"; do
  set -- $kl
  $BACKMARK embed --dataset fashion-mnist --data-dir "$data/fashion-mnist" --model "$out/fmnist/nowm.safetensors" \
    --watermark "$mk" -k "$1" --lr "$2" --schedule constant --epochs 10 --out "$out/sweep-k$1-lr$2.safetensors" \
    "${gpu[@]}" --force --json -q > "$out/sweep-k$1-lr$2.json" 2>> "$out/sweep.log" &
done
wait
rm -f "$out"/*.safetensors "$out"/*/*.safetensors
ls -R "$out" | head -50
