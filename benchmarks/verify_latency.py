"""Verification latency for n = 100 trigger images: in process, TorchScript, ONNX and over HTTP.

One run measures every target on the same key and model, the targets taking turns in each
round, so the ratios compare like with like. Each row times the whole of ``backmark.core.verify.verify`` (open the commitments, query the
model, run the binomial test); the HTTP rows query ``backmark serve`` running in a separate
process on 127.0.0.1 with the v2 JSON protocol. Weights are random (latency does not depend on
them); every target must give the same predictions, which is checked.

    flock /tmp/backmark-heavy.lock python benchmarks/verify_latency.py --repeats 7
"""
from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from backmark.core.keygen import keygen
from backmark.core.verify import verify
from backmark.crypto import OwnerKey
from backmark.models import create_model
from backmark.models.checkpoint import save_model
from backmark.targets import load_target, open_target
from backmark.targets.client import RemoteOptions
from backmark.targets.export import export_file

MODELS = {"fmnist-cnn": (1, 28, 28), "resnet18-cifar": (3, 32, 32)}


def start_server(ckpt: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "backmark", "serve", "--model", str(ckpt), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=60)
    m = re.search(r"(http://\S+)", line[0]) if line else None
    if not m:
        proc.kill()
        raise RuntimeError(f"backmark serve did not start: {proc.stderr.read()[-500:]}")
    return proc, m.group(1)


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(2)
    try:
        proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)


def time_round_robin(cases, mk, vk, repeats: int) -> tuple[dict, dict]:
    """Times per case; the cases take turns in every round, so a change in machine load hits all alike."""
    results = {name: verify(make(), mk, vk) for name, make in cases}  # warm-up, and the answers to compare
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(repeats):
        for name, make in cases:
            target = make()
            start = time.perf_counter()
            verify(target, mk, vk)
            times[name].append(time.perf_counter() - start)
    return times, results


def run(model_name: str, n: int, repeats: int, work: Path) -> list[dict]:
    shape = MODELS[model_name]
    mk, vk = keygen(input_shape=shape, num_classes=10, owner_key=OwnerKey.generate(), set_size=n)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model(model_name, num_classes=10, input_shape=shape).eval()
    ckpt = work / f"{model_name}.safetensors"
    save_model(ckpt, model, {"model": model_name, "num_classes": 10, "input_shape": list(shape)})
    export_file(ckpt, onnx=work / f"{model_name}.onnx", torchscript=work / f"{model_name}.pt", force=True)
    proc, url = start_server(ckpt)  # url: http://127.0.0.1:PORT/v2/models/NAME
    try:
        in_process = load_target(ckpt)  # loaded once, as a model in memory is
        ts, onnx = open_target(work / f"{model_name}.pt"), open_target(work / f"{model_name}.onnx")
        cases = [
            ("in process (torch)", lambda: in_process),
            ("TorchScript", lambda: ts),
            ("ONNX (onnxruntime)", lambda: onnx),
            ("HTTP v2, batch 32", lambda: open_target(url, remote=RemoteOptions(batch_size=32))),
            ("HTTP v2, batch 100", lambda: open_target(url, remote=RemoteOptions(batch_size=100))),
        ]
        times, results = time_round_robin(cases, mk, vk, repeats)
        reference = results[cases[0][0]]
        rows = []
        for name, _ in cases:
            r = results[name]
            same = (r.predictions, r.decision.p_value) == (reference.predictions, reference.decision.p_value)
            rows.append({"model": model_name, "target": name, "median": statistics.median(times[name]), "min": min(times[name]), "same": same})
    finally:
        stop_server(proc)
    base_median = rows[0]["median"]
    for r in rows:
        r["ratio"] = r["median"] / base_median
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="trigger images verified")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per target (after one warm-up)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows = [r for m in args.models.split(",") for r in run(m, args.n, args.repeats, Path(d))]
    print(f"verification latency, n = {args.n}, median of {args.repeats} rounds (targets take turns) after a warm-up; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print()
    print("| model | target | median (ms) | min (ms) | x in-process | same result |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['model']} | {r['target']} | {1000 * r['median']:.1f} | {1000 * r['min']:.1f} | {r['ratio']:.2f} | {'yes' if r['same'] else 'NO'} |")


if __name__ == "__main__":
    main()
