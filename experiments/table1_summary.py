"""Summarise an experiments/table1.sh run folder as a Markdown table (stdout)."""
import json
import subprocess
import sys
from pathlib import Path

out = Path(sys.argv[1])
run = json.loads((out / "run.json").read_text())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
import backmark  # noqa: E402

print(f"Dataset `{run['dataset']}`, extra options `{run['args'] or '(none)'}`, backmark {backmark.__version__} (commit {commit}), "
      f"{run['seconds']} s wall time in all.\n")
print("| model | test acc (%) | trigger acc (%) | matches / n | threshold | p-value | verdict | epochs | train s |")
print("|---|---|---|---|---|---|---|---|---|")
for name, label in (("nowm", "NO-WM"), ("fromscratch", "FROMSCRATCH"), ("pretrained", "PRETRAINED")):
    hist = json.loads((out / f"{name}.json").read_text())["history"]
    v = json.loads((out / f"verify-{name}.json").read_text())
    trig = 100 * v["matches"] / v["n"]
    print(f"| {label} | {100 * hist[-1]['test_acc']:.2f} | {trig:.1f} | {v['matches']}/{v['n']} | {v['threshold']} | "
          f"{v['p_value']:.3g} | {'verified' if v['verified'] else 'rejected'} | {len(hist)} | {sum(h['seconds'] for h in hist):.0f} |")
