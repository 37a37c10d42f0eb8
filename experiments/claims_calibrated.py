"""Owner-chosen labels against the verifier's reference models: the calibrated null, measured.

    flock /tmp/backmark-heavy2.lock python experiments/claims_calibrated.py --out runs/claims [--refs fmnist-cnn:8,cifar-small:3]

Keys (100 elements each, labels chosen by their maker, so only a calibrated null can make them evidence):
- honest: abstract trigger images with labels the owner picked at random; the owner marks a model with it;
- natural: ordinary Fashion-MNIST test images labelled with their true classes;
- copied: the same images labelled with the marked ("stolen") model's own answers.
Models: the owner's marked model (FROMSCRATCH), and >= 10 reference models the verifier trained
independently (by default 8 fmnist-cnn and 3 cifar-small on 1x28x28, different seeds). Each key is verified
on the marked model and on a held-out independent model against the other reference models.
Writes OUT/results.json and prints the Markdown table of docs/results/claims.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from backmark.core.keygen import keygen
from backmark.core.verify import verify
from backmark.crypto import OwnerKey
from backmark.data import load_dataset
from backmark.experiments.workflow import train_file
from backmark.io.documents import write_json
from backmark.training import TrainConfig, predict

ARCHS = ("fmnist-cnn", "cifar-fast", "cifar-small")  # the seed of a reference model: 100 + 10 * index + s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train-size", type=int, default=20000, help="training images per model (a fixed random subset)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--refs", default="fmnist-cnn:8,cifar-small:3",
                    help="reference models as ARCH:COUNT,... (one of them, the first by name, is held out as a suspect)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread wastes least
    counts = {a: int(c) for a, c in (item.split(":") for item in args.refs.split(","))}
    if set(counts) - set(ARCHS):
        ap.error(f"--refs: architectures are {', '.join(ARCHS)}")
    t0 = time.perf_counter()
    out = args.out
    (out / "models").mkdir(parents=True, exist_ok=True)
    data = load_dataset("fashion-mnist", train_size=args.train_size, seed=0)
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05)
    honest = _honest_keys(out / "keys", data.input_shape)  # kept: a rerun reuses the marked model it made

    def model(name, path, **kw):
        if path.exists():
            from backmark.models.checkpoint import load_model

            return load_model(path)[0]
        return train_file(data=data, model_name=name, out=path, device="cpu", **kw)[0]

    marked = model("fmnist-cnn", out / "models" / "marked.safetensors", cfg=cfg.replace(trigger_k=8), keys=honest)
    refs = {}
    for arch, count in counts.items():
        for s in range(count):
            seed = 100 + 10 * ARCHS.index(arch) + s
            path = out / "models" / f"ref-{arch}-{seed}.safetensors"
            refs[path.name] = (model(arch, path, cfg=cfg.replace(seed=seed)), path)
    images = data.test_x[:100].permute(0, 2, 3, 1).numpy()
    thief = OwnerKey.generate()
    natural = keygen(input_shape=data.input_shape, num_classes=10, owner_key=thief, set_size=100, images=images,
                     labels=data.test_y[:100].tolist(), owner="natural images, true labels")
    copied = keygen(input_shape=data.input_shape, num_classes=10, owner_key=thief, set_size=100, images=images,
                    labels=predict(marked, data.test_x[:100]).tolist(), owner="labels copied from the stolen model")
    names = sorted(refs)
    held_out = names[0]  # an independent model the verifier did not use as a reference
    references = [refs[n][1] for n in names[1:]]
    rows = []
    for key_name, (mk, vk) in (("honest", honest), ("natural", natural), ("copied", copied)):
        for suspect_name, suspect in (("owner's marked model", marked), (f"independent ({held_out})", refs[held_out][0])):
            alone = verify(suspect, mk, vk)
            cal = verify(suspect, mk, vk, reference_models=references)
            rows.append({"key": key_name, "suspect": suspect_name, "matches": cal.matches, "n": cal.n,
                         "verdict_alone": alone.verdict.kind, "p0": float(cal.null.p0), "threshold": cal.decision.threshold,
                         "pooled": f"{cal.null.as_dict()['pooled_matches']}/{cal.null.as_dict()['pooled_trials']}",
                         "p_value": cal.decision.p_value, "verdict": cal.verdict.kind, "verified": cal.verified})
    doc = {"format": "backmark-claims-calibrated", "train_size": args.train_size, "epochs": args.epochs,
           "reference_models": [str(p.name) for p in references], "held_out": held_out, "rows": rows,
           "seconds": time.perf_counter() - t0}
    write_json(out / "results.json", doc, force=True, mode=0o644)
    lines = [f"{len(references)} reference models; held-out independent model {held_out}; {args.train_size} training images, "
             f"{args.epochs} epochs each; {doc['seconds']:.0f} s", "",
             "| key | suspect | matches | alone | reference pooled | calibrated p0 | threshold | p-value | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['key']} | {r['suspect']} | {r['matches']}/{r['n']} | {r['verdict_alone']} | {r['pooled']} | "
                     f"{r['p0']:.3f} | {r['threshold']} | {r['p_value']:.2g} | **{r['verdict']}** |")
    print("\n".join(lines))
    print(json.dumps({"verified": [(r["key"], r["suspect"]) for r in rows if r["verified"]]}))


def _honest_keys(folder: Path, input_shape):
    from backmark.core.keygen import MarkingKey, VerificationKey

    mk_path, vk_path = folder / "marking-key.json", folder / "verification-key.json"
    if mk_path.exists():
        return MarkingKey.load(mk_path), VerificationKey.load(vk_path)
    rng = np.random.default_rng(0)
    mk, vk = keygen(input_shape=input_shape, num_classes=10, owner_key=OwnerKey.generate(), set_size=100,
                    labels=rng.integers(0, 10, size=100).tolist(), dataset="fashion-mnist", owner="honest owner")
    folder.mkdir(parents=True, exist_ok=True)
    mk.save(mk_path)
    vk.save(vk_path)
    return mk, vk


if __name__ == "__main__":
    main()
