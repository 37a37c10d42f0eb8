"""benchmarks/run_all.py --quick: the output's shape (keys, intervals, a verdict per target), never a time."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_all_quick_writes_intervals_and_verdicts(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "benchmarks.json").read_text())
    assert set(doc) >= {"command", "environment", "seconds", "benchmarks", "verdicts"} and doc["quick"] is True
    b = doc["benchmarks"]

    def interval(d):  # a ratio with its interval around it
        assert {"ratio", "lo", "hi", "pairs", "half_width"} <= set(d) and d["lo"] <= d["ratio"] <= d["hi"] and d["pairs"] >= 2

    for row in b["embed_overhead"]:
        interval(row["steps"]["wall"]), interval(row["steps"]["cpu"]), interval(row["whole_call_wall"])
        assert row["verdict"] and len(row["samples"]["NO-WM"]) == len(row["samples"]["FROMSCRATCH"]) == row["rounds"]
    for row in b["train_throughput"]:
        assert {"backmark", "official-w0", "limit"} <= set(row["arms"])
        for name, arm in row["arms"].items():
            interval(arm["backmark_speedup"]), interval(arm["backmark_speedup_cpu"])
            assert (arm["verdict"] is None) == (name == "backmark")
    rows = b["verify_latency"]["rows"]
    assert {r["target"] for r in rows} == {
        "in process (torch)",
        "TorchScript",
        "ONNX (onnxruntime)",
        "HTTP v2 JSON",
        "HTTP v2 binary",
    }
    assert all(r["same"] for r in rows) and all(r["median_lo"] <= r["median_s"] <= r["median_hi"] for r in rows)
    for r in rows:
        if r["target"] != "in process (torch)":
            interval(r["x_in_process"])
    encodings = {r["target"]: (r["encoding"], r["request_bytes_per_image"]) for r in rows if "HTTP" in r["target"]}
    assert encodings["HTTP v2 binary"][0] == "binary" and encodings["HTTP v2 JSON"][0] == "json"
    assert encodings["HTTP v2 binary"][1] < encodings["HTTP v2 JSON"][1]
    # a verdict per target, each naming its measurement; "unresolved" is allowed (a noisy machine), a bare ratio is not
    targets = [(v["benchmark"], v["target"]) for v in doc["verdicts"]]
    assert len(targets) == len(set(targets)) == 6
    words = ("meets", "misses", "inconclusive", "unresolved")
    for v in doc["verdicts"]:  # "meets <= 1.03", or per metric: "wall: unresolved: ...; CPU: meets <= 1.03"
        parts = [p.strip().removeprefix("wall: ").removeprefix("CPU: ") for p in v["verdict"].split(";")]
        assert all(p.split(" ")[0].rstrip(":") in words for p in parts) and v["measured"], v
    md = (tmp_path / "benchmarks.md").read_text()
    assert "## Targets" in md and sum(md.count(f"| {w}") + md.count(f"| wall: {w}") for w in words) >= 6


def test_verdicts_are_given_where_the_interval_settles_them(monkeypatch):
    """Wholly on one side of the target: meets / misses (saying when wider than claimed); across it: never a verdict."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from _harness import Interval, verdict

    def v(lo, hi, **kw):
        return verdict(Interval((lo + hi) / 2, lo, hi, 10), **kw)

    assert v(1.005, 1.015, target=1.03, resolution=0.01) == "meets <= 1.03"
    assert v(1.04, 1.05, target=1.03, resolution=0.01) == "misses <= 1.03"
    assert v(1.0, 1.2, target=2.0, resolution=0.1) == "meets <= 2"  # +-9.1%: within the claim
    assert v(1.0, 1.5, target=2.0, resolution=0.1) == "meets <= 2 (but the interval is +-20.0%, wider than the +-10% claimed)"
    assert v(1.0, 1.5, target=1.2, resolution=0.1).startswith("unresolved: the interval is +-20.0%")
    assert v(1.02, 1.04, target=1.03, resolution=0.01) == "inconclusive: the interval straddles 1.03"
    assert v(1.9, 2.1, target=2.0, resolution=0.1, direction=">=") == "inconclusive: the interval straddles 2"
    assert v(2.1, 2.2, target=2.0, resolution=0.1, direction=">=") == "meets >= 2"
