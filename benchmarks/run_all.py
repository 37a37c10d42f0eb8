"""Every benchmark in one command: the JSON and the markdown that docs/results/ show.

    flock /tmp/backmark-heavy.lock python benchmarks/run_all.py          # ~9 minutes on the 2-core CPU
    python benchmarks/run_all.py --quick --out /tmp/bench                # seconds: synthetic data, 3 rounds (the test)

Runs, each paired and interleaved with a 95% interval on every ratio (:mod:`_harness`):

- ``embed_overhead``: FROMSCRATCH / NO-WM training steps, fmnist-cnn and cifar-fast (target <= 1.03, to +-1%);
- ``train_throughput``: backmark against the official code's pipeline and against the bare step (>= 2, >= 0.9);
- ``verify_latency``: n = 100 and 1000 in process, TorchScript, ONNX, HTTP v2 JSON and binary (n = 100 in
  process <= 0.1 s; HTTP binary <= 2x in process; request bytes per image <= 1.2x the raw pixels).

Writes ``OUT/benchmarks.json`` (every sample, interval and verdict) and ``OUT/benchmarks.md`` (the tables,
then one verdict per target). A verdict is "unresolved" where the interval is wider than the resolution
the benchmark claims: the machine was too noisy for it, and the interval says by how much.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import embed_overhead
import torch
import train_throughput
import verify_latency
from _harness import environment, interval_text, use_malloc

FULL = {  # per benchmark: models and seconds per model (the whole run stays under 10 minutes here)
    "embed_overhead": {"models": ["fmnist-cnn", "cifar-fast"], "budget": 100.0, "min_rounds": 8, "max_rounds": 200},
    "train_throughput": {"models": ["fmnist-cnn", "cifar-fast"], "budget": 80.0, "min_rounds": 6, "max_rounds": 100},
    "verify_latency": {"models": ["fmnist-cnn"], "n": [100, 1000], "budget": 45.0, "min_rounds": 10, "max_rounds": 100},
}
QUICK = {
    "embed_overhead": {"models": ["fmnist-cnn"], "budget": 0.0, "min_rounds": 3, "max_rounds": 3, "steps": 3},
    "train_throughput": {"models": ["fmnist-cnn"], "budget": 0.0, "min_rounds": 3, "max_rounds": 3, "steps": 3},
    "verify_latency": {"models": ["fmnist-cnn"], "n": [100], "budget": 0.0, "min_rounds": 3, "max_rounds": 3},
}


def namespace(settings: dict, quick: bool, **extra) -> argparse.Namespace:
    common = {
        "steps": None,
        "device": "cpu",
        "synthetic": quick,
        "precision": "fp32",
        "compile": "off",
        "no_channels_last": False,
        "workers": [0],
        "no_overhead": True,
        "quick": quick,
    }
    return argparse.Namespace(**{**common, **settings, **extra})


def verdicts(results: dict) -> list[dict]:
    """One line per target: what was measured (with its interval) and the verdict."""
    out = []
    for r in results["embed_overhead"]:
        out.append(
            {
                "benchmark": "embed_overhead",
                "model": r["model"],
                "target": f"FROMSCRATCH / NO-WM <= {r['target']} to +-{100 * r['resolution']:g}%",
                "measured": interval_text(r["steps"]["wall"]),
                "cpu": interval_text(r["steps"]["cpu"]),
                "verdict": r["verdict"],
            }
        )
    for r in results["train_throughput"]:
        for name, a in r["arms"].items():
            if a["verdict"] is not None and a["goal"] is not None:
                out.append(
                    {
                        "benchmark": "train_throughput",
                        "model": r["model"],
                        "target": f"backmark / {name} >= {a['goal']} to +-{100 * r['resolution']:g}%",
                        "measured": interval_text(a["backmark_speedup"], 2),
                        "cpu": interval_text(a["backmark_speedup_cpu"], 2),
                        "verdict": a["verdict"],
                    }
                )
    for v in results["verify_latency"]["verdicts"]:
        out.append({"benchmark": "verify_latency", **v})
    return out


def markdown(doc: dict) -> str:
    env = doc["environment"]
    parts = [
        f"Command: `{doc['command']}`, {doc['seconds']:.0f} s, {env['date']}; torch {env['torch']}, {env['threads']} threads, "
        f"{env['cpus']} CPUs, load average at the start {env['load_average_at_start'][0]:.1f}; malloc {env.get('malloc', 'not recorded')}.",
        "Every ratio is the geometric mean over paired rounds with its 95% interval [lo, hi] (wall time; CPU time beside it).",
        "",
        "## Targets",
        "",
        "| benchmark | model | target | measured [95%] | CPU [95%] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    parts += [
        f"| {v['benchmark']} | {v['model']} | {v['target']} | {v['measured']} | {v.get('cpu', '')} | {v['verdict']} |"
        for v in doc["verdicts"]
    ]
    b = doc["benchmarks"]
    parts += [
        "",
        "## Embedding overhead (training steps)",
        "",
        embed_overhead.markdown(b["embed_overhead"]),
        "",
        "## Training throughput",
        "",
        train_throughput.markdown(b["train_throughput"]),
        "",
        "## Verification latency",
        "",
        verify_latency.markdown(b["verify_latency"]),
        "",
    ]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="Seconds, not minutes: synthetic data, 3 rounds, fewer models (the shape, not the numbers).",
    )
    ap.add_argument("--out", default="docs/results/bench", help="Folder for benchmarks.json and benchmarks.md.")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [torch's default: one per core].")
    ap.add_argument("--system-malloc", action="store_true", help="The C library's malloc as it is, not the backmark command's setting.")
    args = ap.parse_args()
    use_malloc(args.system_malloc)
    if args.threads:
        torch.set_num_threads(args.threads)  # on a machine busier than its cores, 1 thread wastes less waiting for the other
    plan = QUICK if args.quick else FULL
    env, started = environment(), time.perf_counter()
    results = {
        "embed_overhead": embed_overhead.run(namespace(plan["embed_overhead"], args.quick))["embed_overhead"],
        "train_throughput": train_throughput.run(namespace(plan["train_throughput"], args.quick))["throughput"],
        "verify_latency": verify_latency.run(namespace(plan["verify_latency"], args.quick)),
    }
    doc = {
        "command": "python benchmarks/run_all.py" + (" --quick" if args.quick else "") + f" --out {args.out}"
        + (f" --threads {args.threads}" if args.threads else "") + (" --system-malloc" if args.system_malloc else ""),
        "quick": args.quick,
        "environment": env,
        "seconds": time.perf_counter() - started,
        "benchmarks": results,
        "verdicts": verdicts(results),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(doc, indent=1))
    (out / "benchmarks.md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    sys.exit(main())
