"""Verification latency, n = 100 and n = 1000: in process, TorchScript, ONNX, and HTTP (v2 JSON and binary).

One run measures every target on the same key and model; the targets are paired and interleaved
(:mod:`_harness`: each round every target once, in a random order, warm-up discarded), so each
ratio to in process comes with a 95% interval. A unit is one whole ``backmark.core.verify.verify``
call: open the commitments, query the model, run the binomial test. In process and the model files
are loaded once (latency "after the model is loaded"); an HTTP unit opens the target as
``backmark verify --target`` does (the model's metadata, and with binary=auto the server's) and then
queries ``backmark serve`` running in a separate process on 127.0.0.1 (with ``--quick``: a uvicorn
server in a thread of this process), in batches of 100. n = 1000 is a 10-set key (``keygen --sets 10``)
verified whole. Reported per target: median seconds with its 95% interval, client CPU, the server's
CPU (HTTP), request bytes per image against the raw pixels, requests and images each verification
needs (its query budget). Weights are random: latency does not depend on them; every target must
give the in-process predictions, which is checked.

    flock /tmp/backmark-heavy.lock python benchmarks/verify_latency.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from _harness import (
    Interval,
    Timing,
    cpu,
    environment,
    interleave,
    interval_text,
    median_interval,
    ratio_interval,
    rounds_of,
    verdict,
    wall,
)

from backmark.core.keygen import keygen
from backmark.core.verify import verify
from backmark.crypto import OwnerKey
from backmark.models import create_model
from backmark.models.checkpoint import save_model
from backmark.targets import load_target, open_target
from backmark.targets.client import HttpClient, RemoteOptions
from backmark.targets.export import export_file
from backmark.targets.http import V2Target, open_remote
from backmark.targets.serve import BackgroundServer, V2App

MODELS = {"fmnist-cnn": (1, 28, 28), "cifar-fast": (3, 32, 32), "resnet18-cifar": (3, 32, 32)}
BATCH = 100  # images per HTTP request
IN_PROCESS_S, HTTP_RATIO, BYTES_RATIO = (
    0.1,
    2.0,
    1.2,
)  # targets: n=100 in process, HTTP binary / in process, request bytes / raw pixels
RESOLUTION = 0.10  # ratios to in process are claimed to +-10%


class CountingClient(HttpClient):
    """An HttpClient that adds up the bytes of the request bodies it sends."""

    sent = 0

    def _send(self, method, url, body, headers):
        CountingClient.sent += len(body or b"")
        return super()._send(method, url, body, headers)


class CaptureClient(HttpClient):
    """Keeps the body of the one request it is given, sends nothing."""

    def request(self, method, url, body, parse, **kw):
        self.body = body
        return torch.zeros(0, dtype=torch.int64)


def request_bytes(mk) -> dict:
    """Bytes per image of one v2 request for the key's first 100 triggers, in each encoding the client has."""
    images = torch.from_numpy(mk.images[:100]).permute(0, 3, 1, 2).contiguous()
    out = {}
    for datatype in ("FP32", "UINT8"):
        for binary in (False, True):
            client = CaptureClient(RemoteOptions())
            target = V2Target("http://127.0.0.1:9/v2/models/m", client=client)
            target.datatype, target.output_name, target.binary = datatype, "logits", binary
            target._query(images)
            out[f"{'binary' if binary else 'JSON'} {datatype}"] = len(client.body) / len(images)
    return out


def start_server(ckpt: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the server runs as many threads as this process
    proc = subprocess.Popen(
        [sys.executable, "-m", "backmark", "serve", "--model", str(ckpt), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=120)
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


def server_cpu(proc) -> float:
    """CPU seconds the server process has used (Linux /proc; in clock ticks, 10 ms here)."""
    if proc is None:
        return 0.0  # a server thread: its CPU is this process's, counted already
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def arm(make_target, mk, vk, proc, server_s: list[float], answers: list):
    def run() -> Timing:
        s0 = server_cpu(proc)
        w, c = time.perf_counter(), time.process_time()
        result = verify(make_target(), mk, vk)
        t = Timing(time.perf_counter() - w, time.process_time() - c)
        server_s.append(server_cpu(proc) - s0)
        answers.append((result.predictions, result.decision.p_value))
        return t

    return run


def latency(model_name: str, n: int, sets: int, work: Path, args) -> list[dict]:
    shape = MODELS[model_name]
    mk, vk = keygen(input_shape=shape, num_classes=10, owner_key=OwnerKey.generate(), set_size=n // sets, num_sets=sets)
    model = create_model(model_name, num_classes=10, input_shape=shape, seed=0).eval()
    ckpt = work / f"{model_name}.safetensors"
    if not ckpt.exists():
        save_model(ckpt, model, {"model": model_name, "num_classes": 10, "input_shape": list(shape)})
        export_file(ckpt, onnx=work / f"{model_name}.onnx", torchscript=work / f"{model_name}.pt", force=True)
    thread_server = None
    if args.quick:
        thread_server = BackgroundServer(V2App(load_target(ckpt), name=model_name)).__enter__()
        proc, url = None, f"{thread_server.url}/v2/models/{model_name}"
    else:
        proc, url = start_server(ckpt)
    try:
        in_process = load_target(ckpt)  # loaded once, as a model in memory is
        ts, onnx = open_target(work / f"{model_name}.pt"), open_target(work / f"{model_name}.onnx")

        def http(binary):
            return lambda: open_remote(
                url,
                options=RemoteOptions(batch_size=BATCH, binary=binary),
                client=CountingClient(RemoteOptions()),
                num_classes=10,
            )

        makers = {
            "in process (torch)": lambda: in_process,
            "TorchScript": lambda: ts,
            "ONNX (onnxruntime)": lambda: onnx,
            "HTTP v2 JSON": http("off"),
            "HTTP v2 binary": http("auto"),
        }
        server_s = {name: [] for name in makers}
        answers = {name: [] for name in makers}
        bytes_sent = {}
        for name, make in makers.items():  # one verification each to count the request bytes (not timed)
            CountingClient.sent = 0
            result = verify(make(), mk, vk)
            bytes_sent[name] = CountingClient.sent
            queries = result.extra.get("queries", {})
            answers[name].append((result.predictions, result.decision.p_value, queries.get("requests"), queries.get("encoding")))
        arms = {name: arm(make, mk, vk, proc, server_s[name], []) for name, make in makers.items()}
        times = interleave(
            arms,
            baseline="in process (torch)",
            resolution=RESOLUTION,
            **rounds_of(args),
            seed=3,
            warmup=1,
        )
    finally:
        if proc is not None:
            stop_server(proc)
        if thread_server is not None:
            thread_server.__exit__(None, None, None)
    base = "in process (torch)"
    rows = []
    raw = math.prod(shape)
    for name, t in times.items():
        med, lo, hi = median_interval(wall(t))
        preds, p_value, requests, encoding = answers[name][0]
        row = {
            "model": model_name,
            "n": n,
            "sets": sets,
            "target": name,
            "rounds": len(t),
            "median_s": med,
            "median_lo": lo,
            "median_hi": hi,
            "client_cpu_s": statistics.median(cpu(t)),
            "server_cpu_s": statistics.fmean(server_s[name][-len(t) :]) if "HTTP" in name and proc is not None else None,
            "server": ("a thread of this process" if proc is None else "a separate process") if "HTTP" in name else None,
            "same": (preds, p_value) == answers[base][0][:2],
            "requests": requests,
            "encoding": encoding,
            "request_bytes_per_image": bytes_sent[name] / n if "HTTP" in name else None,
            "raw_bytes_per_image": raw,
        }
        if name != base:
            row["x_in_process"] = ratio_interval(wall(t), wall(times[base])).as_dict()
        rows.append(row)
    return rows


def verdicts(rows: list[dict]) -> list[dict]:
    """The three targets, each with the measurement it is decided on."""
    out = []
    for r in rows:
        if r["target"] == "in process (torch)" and r["n"] == 100:
            ok = (
                "meets"
                if r["median_hi"] <= IN_PROCESS_S
                else "misses"
                if r["median_lo"] > IN_PROCESS_S
                else "inconclusive: the interval straddles"
            )
            out.append(
                {
                    "model": r["model"],
                    "target": f"verify n=100 in process <= {IN_PROCESS_S} s",
                    "measured": f"median {r['median_s']:.3f} s [{r['median_lo']:.3f}, {r['median_hi']:.3f}]",
                    "verdict": f"{ok} <= {IN_PROCESS_S}",
                }
            )
        if r["target"] == "HTTP v2 binary":
            iv = r["x_in_process"]
            v = verdict(Interval(iv["ratio"], iv["lo"], iv["hi"], iv["pairs"]), target=HTTP_RATIO, resolution=RESOLUTION)
            out.append(
                {
                    "model": r["model"],
                    "target": f"n={r['n']}: HTTP v2 binary / in process <= {HTTP_RATIO}",
                    "measured": interval_text(iv, 2),
                    "verdict": v,
                }
            )
            ratio = r["request_bytes_per_image"] / r["raw_bytes_per_image"]
            out.append(
                {
                    "model": r["model"],
                    "target": f"n={r['n']}: request bytes per image <= {BYTES_RATIO} x raw pixels",
                    "measured": f"{r['request_bytes_per_image']:.0f} bytes = {ratio:.3f} x {r['raw_bytes_per_image']}",
                    "verdict": f"{'meets' if ratio <= BYTES_RATIO else 'misses'} <= {BYTES_RATIO} (exact count)",
                }
            )
    return out


def markdown(result: dict) -> str:
    lines = [
        "| model | n | target | rounds | median ms [95%] | x in process, wall [95%] | client CPU ms | server CPU ms | "
        "request bytes / image (raw) | requests | same result |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        x = interval_text(r["x_in_process"], 2) if "x_in_process" in r else "1"
        srv = f"{1000 * r['server_cpu_s']:.0f}" if r["server_cpu_s"] is not None else ""
        b = f"{r['request_bytes_per_image']:.0f} ({r['raw_bytes_per_image']})" if r["request_bytes_per_image"] else ""
        lines.append(
            f"| {r['model']} | {r['n']} | {r['target']} | {r['rounds']} | {1000 * r['median_s']:.1f} "
            f"[{1000 * r['median_lo']:.1f}, {1000 * r['median_hi']:.1f}] | {x} | {1000 * r['client_cpu_s']:.0f} | {srv} | {b} | "
            f"{r['requests'] or ''} | {'yes' if r['same'] else 'NO'} |"
        )
    lines += [
        "",
        "Request bytes per image, batch of 100 trigger images, by encoding (raw pixels in brackets):",
        "",
        "| model | " + " | ".join(next(iter(result["request_bytes_per_image"].values()))) + " |",
        "|---|" + "---|" * len(next(iter(result["request_bytes_per_image"].values()))),
    ]
    for m, sizes in result["request_bytes_per_image"].items():
        raw = math.prod(MODELS[m])
        lines.append(f"| {m} ({raw}) | " + " | ".join(f"{b:,.0f} ({b / raw:.2f}x)" for b in sizes.values()) + " |")
    lines += ["", "| model | target | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {v['model']} | {v['target']} | {v['measured']} | {v['verdict']} |" for v in result["verdicts"]]
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=["fmnist-cnn"], choices=sorted(MODELS))
    p.add_argument("--n", type=int, nargs="+", default=[100, 1000], help="Trigger images verified (n > 100: n / 100 sets).")
    p.add_argument("--min-rounds", type=int, default=10)
    p.add_argument("--max-rounds", type=int, default=100)
    p.add_argument("--budget", type=float, default=60.0, help="Seconds per (model, n) after which no new round starts.")
    p.add_argument("--quick", action="store_true", help="A server thread instead of a process (starts in a second).")
    p.add_argument("--json", dest="json_out", default=None)


def run(args) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for m in args.models:
            for n in args.n:
                rows += latency(m, n, max(1, n // 100), Path(d), args)
        sizes = {
            m: request_bytes(keygen(input_shape=MODELS[m], num_classes=10, owner_key=OwnerKey.generate(), set_size=100)[0])
            for m in args.models
        }
    return {
        "environment": environment(),
        "batch": BATCH,
        "rows": rows,
        "verdicts": verdicts(rows),
        "request_bytes_per_image": sizes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(ap)
    args = ap.parse_args()
    result = run(args)
    print(json.dumps(result["environment"]))
    print(markdown(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
