#!/usr/bin/env bash
# Training throughput on a CUDA GPU, then GPU checks of the speed options and of DDP.
#
#   bash benchmarks/gpu_throughput.sh [OUT_DIR]          # from the repository root
#
# Needs python3 with a CUDA build of torch and backmark's dependencies; wheels in .whl/
# (cryptography, cffi, pycparser, pynacl) are installed to /tmp/site first when present.
# Set FMNIST_DIR to a Fashion-MNIST folder to also run the GPU tests and the torchrun check
# (2 ranks sharing one GPU over gloo, since NCCL needs one GPU per rank).
# Data for the benchmarks is synthetic (random pixels; speed does not depend on them).
# Took about 5 minutes on one H200 (see docs/results/throughput.md).
set -uo pipefail
OUT_DIR=${1:-${OUT:-runs/gpu}}
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/log.txt") 2>&1  # everything also goes to OUT_DIR/log.txt
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
t0=$SECONDS
stamp() { echo "== $1 (at $((SECONDS - t0)) s)"; }

stamp "fp32 throughput and embed overhead"
python3 benchmarks/train_throughput.py --device cuda --synthetic --steps 200 --rounds 3 --workers 4 8 \
  --models fmnist-cnn cifar-small resnet18-cifar --json "$OUT_DIR/throughput-fp32.json"

if [ -n "${FMNIST_DIR:-}" ]; then
  stamp "GPU tests of the speed options (tests/test_speed_options.py)"
  mkdir -p /usr/share/datasets && [ -e /usr/share/datasets/fashion-mnist ] || cp -r "$FMNIST_DIR" /usr/share/datasets/fashion-mnist
  python3 -m pytest -q -p no:cacheprovider tests/test_speed_options.py -k cuda 2>&1 | tail -5

  stamp "torchrun: 2 ranks on the GPU (gloo) vs one process, same recipe; the watermark must verify"
  keys=$(mktemp -d)
  python3 -m backmark keygen --dataset fashion-mnist --out "$keys" --size 30 >/dev/null
  common=(train --dataset fashion-mnist --train-size 8000 --test-size 2000 --watermark "$keys/marking-key.json" --epochs 3 -k 8 --device cuda --json -q)
  BACKMARK_DIST_BACKEND=gloo python3 -m torch.distributed.run --standalone --nproc_per_node=2 -m backmark "${common[@]}" \
    --out "$keys/ddp.safetensors" > "$OUT_DIR/ddp.json" 2> "$OUT_DIR/ddp.err"; echo "torchrun exit $? (stderr in ddp.err)"
  python3 -m backmark "${common[@]}" --out "$keys/single.safetensors" > "$OUT_DIR/single.json"; echo "single exit $?"
  for m in ddp single; do
    python3 -c "import json,sys; h=json.load(open(sys.argv[1]))['history'][-1]; print(sys.argv[2], 'test', h['test_acc'], 'trigger', h['trigger_acc'], 'seconds', round(h['seconds'], 2))" "$OUT_DIR/$m.json" "$m"
    python3 -m backmark verify --model "$keys/$m.safetensors" --marking-key "$keys/marking-key.json" --verification-key "$keys/verification-key.json" | head -1
  done
fi
stamp "bf16 throughput (autocast, no compile)"
python3 benchmarks/train_throughput.py --device cuda --synthetic --steps 200 --rounds 3 --workers 4 --precision bf16 \
  --models fmnist-cnn resnet18-cifar --no-overhead --json "$OUT_DIR/throughput-bf16.json"

stamp "bf16 + torch.compile throughput"
python3 benchmarks/train_throughput.py --device cuda --synthetic --steps 200 --rounds 3 --workers 4 --precision bf16 --compile on \
  --models fmnist-cnn resnet18-cifar --no-overhead --json "$OUT_DIR/throughput-bf16-compile.json"

stamp "done"
