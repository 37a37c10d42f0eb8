"""The api-mark on Fashion-MNIST: a thief extracts the model through the marked API; verify-extraction decides.

    OMP_NUM_THREADS=1 flock /tmp/backmark-heavy.lock .venv/bin/python experiments/api_mark.py --out runs/api-mark
        [--queries 1.0,0.2]

Steps (each skipped when its output exists, so an interrupted run continues):
1. an api-mark (fraction 0.5%, DAWN's default) and a NO-WM victim (fmnist-cnn, the `backmark train` recipe, seed 0);
2. the API's accuracy on the test set (the api-mark alters ~0.45% of answers; the model is untouched);
3. for each share of the training images the thief queries: the API answers them (in process, through
   ApiMarkedTarget: the code `serve --api-mark` runs) and logs the marked answers; a STOLEN student
   (fresh fmnist-cnn, the same recipe, seed 1) is trained on the API's answers, a CONTROL student on the
   victim's own answers to the same images (no api-mark), and verify-extraction replays the log against
   both and against the victim, cut at the log head recorded right after the API answered (before any
   student existed: what the owner would publish then);
4. OUT/results.json and a markdown table on stdout (docs/results/api-mark.md).

    .venv/bin/python experiments/api_mark.py --out runs/api-mark --rates 20

measures the selection rate instead: 20 fresh api-marks at 0.5% over the 70,000 Fashion-MNIST images,
and (once OUT/victim.safetensors exists) the time to answer the 10,000 test images with and without an
api-mark (OUT/rates.json and lines on stdout).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from backmark.crypto import OwnerKey
from backmark.data import load_dataset
from backmark.experiments.workflow import train_file
from backmark.models.checkpoint import load_model
from backmark.protocols.apilog import ApiLog, read_api_log
from backmark.protocols.apimark import ApiMark, ApiMarkedTarget, selection_rate
from backmark.protocols.extraction import verify_extraction
from backmark.targets import TorchTarget
from backmark.training.recipes import recipe_for

FIELDS = ("verified", "verdict", "matches", "n", "threshold", "p_value", "log2_p_value")


def trained(out: Path, data, seed: int, epochs: int | None):
    cfg = recipe_for("fashion-mnist").train.replace(seed=seed, trigger_k=0, epochs=epochs)
    if not out.exists():
        train_file(data=data, model_name="fmnist-cnn", cfg=cfg, out=out, device="cpu")
    model, meta = load_model(out)
    return model, meta["history"][-1]["test_acc"]


def rates(out: Path, count: int, fraction: float) -> None:
    """The share of the 70k Fashion-MNIST images each of ``count`` fresh api-marks selects."""
    from scipy.stats import binom

    data = load_dataset("fashion-mnist", seed=0)
    images = torch.cat([data.train_x, data.test_x])
    owner = OwnerKey.generate()
    picked = [selection_rate(ApiMark.generate(num_classes=10, owner_key=owner, fraction=fraction), images) * len(images)
              for _ in range(count)]
    lo, hi = binom.ppf(0.025, len(images), fraction), binom.isf(0.025, len(images), fraction)
    doc = {"fraction": fraction, "images": len(images), "selected": [round(p) for p in picked],
           "mean_rate": sum(picked) / count / len(images), "binomial_95_range": [lo, hi]}
    victim = out / "victim.safetensors"
    if victim.exists():  # the answer time with and without the api-mark (log and images to a temporary folder)
        import statistics
        import tempfile

        model, _ = load_model(victim)
        mark = ApiMark.generate(num_classes=10, owner_key=owner, fraction=fraction)
        times = {"plain": [], "api-mark": []}
        for rep in range(3):  # interleaved, the median of 3
            t = time.perf_counter()
            TorchTarget(model).predict(data.test_x)
            times["plain"].append(time.perf_counter() - t)
            with tempfile.TemporaryDirectory() as tmp, ApiLog(Path(tmp) / "l.jsonl", Path(tmp) / "i.jsonl", mark) as log:
                t = time.perf_counter()
                ApiMarkedTarget(TorchTarget(model), mark, log).predict(data.test_x)
                times["api-mark"].append(time.perf_counter() - t)
        doc["answer_seconds_10k"] = {k: statistics.median(v) for k, v in times.items()}
        print(f"answering the 10,000 test images: {doc['answer_seconds_10k']['plain']:.2f} s plain, "
              f"{doc['answer_seconds_10k']['api-mark']:.2f} s with the api-mark (median of 3)")
    (out / "rates.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{count} api-marks at {fraction:g} over {len(images):,} images: selected {min(picked):.0f}..{max(picked):.0f} "
          f"(mean rate {100 * doc['mean_rate']:.3f}%; Binomial 95% range {lo:.0f}..{hi:.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--queries", default="1.0,0.2", help="shares of the training images the thief queries")
    ap.add_argument("--fraction", type=float, default=0.005)
    ap.add_argument("--epochs", type=int, default=None, help="victim and student epochs [the recipe's 3]")
    ap.add_argument("--train-size", type=int, default=None, help="a training subset (smoke runs) [all 60k]")
    ap.add_argument("--rates", type=int, default=None, metavar="N", help="measure N fresh api-marks' selection rate instead")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.rates:
        return rates(a.out, a.rates, a.fraction)
    owner, _ = OwnerKey.load_or_create(a.out / "owner-key.pem")
    mark_path = a.out / "api-mark.json"
    if not mark_path.exists():
        ApiMark.generate(num_classes=10, owner_key=owner, fraction=a.fraction).save(mark_path)
    mark = ApiMark.load(mark_path)
    data = load_dataset("fashion-mnist", train_size=a.train_size, seed=0)
    victim, victim_acc = trained(a.out / "victim.safetensors", data, 0, a.epochs)
    api = ApiMarkedTarget(TorchTarget(victim), mark, None)
    api_acc = float((api.predict(data.test_x) == data.test_y).float().mean())
    doc = {"fraction": mark.fraction, "api_mark": mark.fingerprint, "victim_test_acc": victim_acc,
           "api_test_acc": api_acc, "api_test_marked": api.stats(), "runs": []}
    for share in [float(s) for s in a.queries.split(",")]:
        tag = f"q{share:g}"
        n = round(share * len(data.train_x))
        queries = data.train_x[torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(1))[:n]]
        log_path = a.out / f"api-log-{tag}.jsonl"
        started = time.perf_counter()
        if not log_path.exists():
            with ApiLog(log_path, log_path.with_suffix(".images.jsonl"), mark) as log:
                marked = ApiMarkedTarget(TorchTarget(victim), mark, log)
                torch.save(marked.predict(queries), a.out / f"answers-{tag}.pt")
        answers = torch.load(a.out / f"answers-{tag}.pt")
        own = TorchTarget(victim).predict(queries)
        log = read_api_log(log_path, mark)
        head = log.head  # fixed before any student is trained: the head the owner publishes
        row = {"share": share, "queries": n, "logged": len(log.entries), "head": head,
               "answers_altered": int((answers != own).sum()), "answer_seconds": time.perf_counter() - started}
        for name, labels in [("stolen", answers), ("control", own)]:
            labelled = replace(data, train_x=queries, train_y=labels)
            student, acc = trained(a.out / f"{name}-{tag}.safetensors", labelled, 1, a.epochs)
            r = verify_extraction(student, mark, log_path, log_path.with_suffix(".images.jsonl"), head=head)
            row[name] = {"test_acc": acc, **{k: r.as_dict()[k] for k in FIELDS}}
        r = verify_extraction(victim, mark, log_path, log_path.with_suffix(".images.jsonl"), head=head)
        row["victim"] = {k: r.as_dict()[k] for k in FIELDS}
        doc["runs"].append(row)
        (a.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"victim test accuracy {100 * victim_acc:.2f}%, API answers {100 * api_acc:.2f}% "
          f"({api.stats()['altered']} of {len(data.test_x)} test answers altered)\n")
    print("| thief's queries | logged answers | suspect | test accuracy | matches / n | threshold | p-value | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for row in doc["runs"]:
        for name in ("stolen", "control", "victim"):
            s = row[name]
            acc = f"{100 * s['test_acc']:.2f}%" if "test_acc" in s else f"{100 * victim_acc:.2f}%"
            print(f"| {row['queries']:,} ({100 * row['share']:g}%) | {row['logged']} | {name} | {acc} "
                  f"| {s['matches']} / {s['n']} | {s['threshold']} | 2^{s['log2_p_value']:.1f} "
                  f"| {s['verdict']['text'].split(' (')[0]} (exit {0 if s['verified'] else 1}) |")


if __name__ == "__main__":
    main()
