"""Measure EZKL proving per image for a ladder of small Fashion-MNIST-shaped models.

    flock /tmp/backmark-heavy.lock python benchmarks/zk_proving.py --out runs/zk-bench [--checkpoint m.safetensors]

For each model: fit it to 4 trigger images (so its answers are the labels), build the
circuit (export, calibrate, compile, test-grade SRS, keys), then in a fresh process prove one
element and verify it, recording wall time and peak resident memory (ru_maxrss) of that
process. Writes OUT/results.json and prints a Markdown table. ``--checkpoint`` adds a real
backmark model (e.g. the marked fmnist-cnn) to the ladder, with the size limits lifted.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

SHAPE = (1, 28, 28)


def _ladder() -> dict[str, nn.Module]:
    def conv(cin, cout):
        return [nn.Conv2d(cin, cout, 3, stride=2), nn.ReLU()]

    return {
        "linear-784x10": nn.Sequential(nn.Flatten(), nn.Linear(784, 10)),
        "cnn-4": nn.Sequential(*conv(1, 4), nn.Flatten(), nn.Linear(4 * 13 * 13, 10)),
        "cnn-8-16": nn.Sequential(*conv(1, 8), *conv(8, 16), nn.Flatten(), nn.Linear(16 * 6 * 6, 10)),
        "mlp-784x32x10": nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)),
        "cnn-16-32": nn.Sequential(*conv(1, 16), *conv(16, 32), nn.Flatten(), nn.Linear(32 * 6 * 6, 10)),
    }


def _fit(model: nn.Module, mk, indices) -> nn.Module:
    x = torch.from_numpy(mk.images[indices]).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor([mk.labels[i] for i in indices])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _child(args) -> None:
    """One stage in a fresh process: prints JSON with its wall time and peak RSS."""
    from backmark.core.keygen import MarkingKey, VerificationKey
    from backmark.errors import TooLargeForZK
    from backmark.protocols.zk import ZK_MAX_LOGROWS, build_circuit, prove_elements, verify_proofs

    out = Path(args.out)
    mk = MarkingKey.load(out / "keys" / "marking-key.json")
    vk = VerificationKey.load(out / "keys" / "verification-key.json")
    model = _load(args.model, out)
    t = time.perf_counter()
    doc = {}
    if args.stage == "setup":
        # ladder models: no limit (measure them all); real checkpoints: the default row limit, so a
        # model too large stops after calibration with TooLargeForZK instead of a multi-GB proving key
        limit = ZK_MAX_LOGROWS if args.model.startswith("checkpoint:") else 30
        try:
            c = build_circuit(model, SHAPE, mk.images[:4], folder=_dir(out, args.model) / "circuit", max_params=10**9, max_logrows=limit)
        except TooLargeForZK as e:
            print(json.dumps({"stage": "setup", "error": str(e), "seconds": time.perf_counter() - t,
                              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
            return
        doc = {"manifest": c.manifest}
    elif args.stage == "prove":
        m = prove_elements(model, mk, vk, [args.index], _dir(out, args.model) / "proofs", circuit_folder=_dir(out, args.model) / "circuit",
                           max_params=10**9, max_logrows=30, force=True)
        doc = {"proofs": m["proofs"], "skipped": m["skipped"]}
    elif args.stage == "verify":
        r = verify_proofs(_dir(out, args.model) / "proofs", vk=vk)
        doc = {"valid": len(r.valid), "rejected": r.rejected, "verify_seconds": [v["verify_seconds"] for v in r.valid]}
    doc.update(stage=args.stage, seconds=time.perf_counter() - t, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(doc))


def _dir(out: Path, name: str) -> Path:
    return out / name.replace(":", "_").replace("/", "_")


def _load(name: str, out: Path) -> nn.Module:
    path = _dir(out, name) / "model.pt"
    if name.startswith("checkpoint:"):
        from backmark.models.checkpoint import load_model

        return load_model(name.split(":", 1)[1])[0]
    model = _ladder()[name]
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def _run(out: Path, model: str, stage: str, index: int, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--out", str(out), "--model", model, "--stage", stage, "--index", str(index)]
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"stage": stage, "error": f"timed out after {timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"stage": stage, "error": (p.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(lines[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", action="append", default=[], help="A backmark checkpoint to add to the ladder.")
    ap.add_argument("--only", action="append", default=None, help="Run only these ladder models.")
    ap.add_argument("--timeout", type=int, default=900, help="Seconds per stage.")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    from backmark.core.keygen import MarkingKey, keygen
    from backmark.crypto import OwnerKey

    out = Path(args.out)
    keys = out / "keys"
    if not (keys / "marking-key.json").exists():
        mk, vk = keygen(input_shape=SHAPE, num_classes=10, owner_key=OwnerKey.generate(), set_size=4)
        mk.save(keys / "marking-key.json")
        vk.save(keys / "verification-key.json")
    mk = MarkingKey.load(keys / "marking-key.json")
    results = []
    names = [n for n in _ladder() if args.only is None or n in args.only] + [f"checkpoint:{c}" for c in args.checkpoint]
    for name in names:
        row = {"model": name}
        if not name.startswith("checkpoint:"):
            torch.manual_seed(0)
            model = _fit(_ladder()[name], mk, [0, 1, 2, 3])
            _dir(out, name).mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), _dir(out, name) / "model.pt")
        else:
            from backmark.models.checkpoint import load_model

            model = load_model(name.split(":", 1)[1])[0]
        x = torch.from_numpy(mk.images[:4]).permute(0, 3, 1, 2).float() / 255
        hits = [i for i, p in enumerate(model.eval()(x).argmax(1).tolist()) if p == mk.labels[i]]
        row["params"] = sum(p.numel() for p in model.parameters())
        row["setup"] = _run(out, name, "setup", 0, args.timeout)
        if "error" not in row["setup"] and hits:
            row["prove"] = _run(out, name, "prove", hits[0], args.timeout)
            if "error" not in row["prove"] and row["prove"]["proofs"]:
                row["verify"] = _run(out, name, "verify", 0, args.timeout)
        elif not hits:
            row["prove"] = {"error": "the model answers none of the 4 triggers' labels"}
        results.append(row)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        print(table_row(row), flush=True)


def table_row(r: dict) -> str:
    s, p, v = r.get("setup", {}), r.get("prove", {}), r.get("verify", {})
    m = s.get("manifest", {})
    proof = (p.get("proofs") or [{}])[0]
    cells = [
        r["model"], f"{r['params']:,}", str(m.get("logrows", "-")), f"{m.get('num_rows', '-')}",
        f"{s['seconds']:.1f}" if "manifest" in s else s.get("error", "-"),
        f"{m.get('pk_bytes', 0) / 2**20:.0f}" if m else "-",
        f"{proof['prove_seconds']:.1f}" if proof else p.get("error", "-"),
        f"{p['peak_rss_mb']:.0f}" if "peak_rss_mb" in p else "-",
        f"{proof['bytes'] / 1024:.1f}" if proof else "-",
        f"{v['verify_seconds'][0]:.2f}" if v.get("verify_seconds") else v.get("error", "-"),
    ]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
