#!/bin/bash
# The pictures in docs/report.md: a real signed report of a small watermarked Fashion-MNIST model,
# its HTML page in headless Chromium and its PDF's first page (issue 13, item 5).
#
#   bash experiments/report_pictures.sh OUT [PICTURES]     e.g. bash experiments/report_pictures.sh runs/report
#
# Steps: keygen (100 derived-label triggers, a named owner), train FROMSCRATCH on 2000 images
# (3 epochs, 64 triggers per batch: under a minute on 2 CPU cores), verify --report OUT/report
# (writes report.json, .html, .pdf), check-report, then the screenshot and the PDF page into
# PICTURES [docs/results/report]. Needs Debian's chromium and poppler-utils (scripts/setup.sh).
set -euo pipefail
OUT=${1:?usage: experiments/report_pictures.sh OUT [PICTURES]}
PICS=${2:-docs/results/report}
BM=${BACKMARK:-.venv/bin/backmark}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT" "$PICS"
KEYS=$OUT/keys
[ -f "$KEYS/verification-key.json" ] || $BM keygen --dataset fashion-mnist --size 100 --owner "Example Vision Ltd" --out "$KEYS"
[ -f "$OUT/wm.safetensors" ] || $BM train --dataset fashion-mnist --train-size 2000 --test-size 500 --epochs 3 -k 64 \
  --seed 0 --device cpu --watermark "$KEYS/marking-key.json" --out "$OUT/wm.safetensors" -q
$BM verify --model "$OUT/wm.safetensors" --marking-key "$KEYS/marking-key.json" \
  --verification-key "$KEYS/verification-key.json" --report "$OUT/report" --force
$BM check-report "$OUT/report.html" --verification-key "$KEYS/verification-key.json" --model "$OUT/wm.safetensors"
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
HOME=$PROFILE chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --disable-dev-shm-usage --hide-scrollbars --mute-audio \
  --user-data-dir="$PROFILE" --screenshot="$(realpath "$OUT")/page.png" --window-size=1200,2400 \
  "file://$(realpath "$OUT/report.html")" 2>/dev/null
pdftoppm -png -r 60 -f 1 -l 1 -singlefile "$OUT/report.pdf" "$OUT/pdf-page-1"
# 128-colour palettes keep the committed pictures small (a few hundred KB at most)
$PY - "$OUT" "$PICS" <<'EOF'
import sys
from PIL import Image
out, pics = sys.argv[1:]
for src, dst in (("page.png", "report-page.png"), ("pdf-page-1.png", "report-pdf-page-1.png")):
    im = Image.open(f"{out}/{src}").convert("RGB")
    im.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(f"{pics}/{dst}", optimize=True)
    print(f"{pics}/{dst}: {im.size[0]}x{im.size[1]}")
EOF
