"""The demo: the whole flow on Fashion-MNIST in a few minutes on a CPU.

KeyGen -> train FROMSCRATCH with the watermark -> verify (accepted) -> train a model
without it (NO-WM, other seed) -> verify it (rejected). Run it with ``backmark demo``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..core.keygen import keygen
from ..core.verify import verify
from ..crypto import OwnerKey
from ..data import load_dataset
from ..io.files import check_writable
from ..training import Reporter
from ..training.recipes import recipe_for
from .workflow import train_file


def run_demo(
    out_dir: str | Path,
    *,
    data_dir=None,
    train_size: int | None = None,
    epochs: int | None = None,
    force: bool = False,
    say: Callable[[str], None] = lambda line: None,
    reporter: Callable[[str], Reporter | None] = lambda label: None,
) -> dict:
    """Run the demo into ``out_dir``. ``say`` receives one line per step; ``reporter(label)``
    gives the progress display of each training run (the CLI passes its progress bars)."""
    started = time.perf_counter()
    out = Path(out_dir)
    paths = {name: out / name for name in ("marking-key.json", "verification-key.json", "owner-key.pem", "watermarked.safetensors", "clean.safetensors")}
    for p in paths.values():
        check_writable(p, force=force)
    data = load_dataset("fashion-mnist", data_dir, train_size=train_size)
    say(f"[1/5] data: {data.describe()}")

    owner = OwnerKey.generate()
    owner.save(paths["owner-key.pem"], force=force)
    mk, vk = keygen(input_shape=data.input_shape, num_classes=data.num_classes, owner_key=owner, dataset=data.name, owner="backmark demo")
    mk.save(paths["marking-key.json"], force=force)
    vk.save(paths["verification-key.json"], force=force)
    say(f"[2/5] keygen: {vk.size} abstract trigger images, derived labels; key {vk.fingerprint[:16]}")

    recipe = recipe_for("fashion-mnist")
    cfg = recipe.train.replace(epochs=epochs)
    say(f"[3/5] train FROMSCRATCH with the watermark ({recipe.model}, {cfg.epochs} epochs, k={cfg.trigger_k})")
    wm_model, wm_hist = train_file(data=data, model_name=recipe.model, cfg=cfg, out=paths["watermarked.safetensors"], keys=(mk, vk), force=force, reporter=reporter("FROMSCRATCH"))
    wm = verify(wm_model, mk, vk)
    say(f"      verify watermarked model: {wm.summary()}")

    say(f"[4/5] train NO-WM (no watermark, seed {cfg.seed + 1})")
    clean_cfg = cfg.replace(seed=cfg.seed + 1)
    clean_model, clean_hist = train_file(data=data, model_name=recipe.model, cfg=clean_cfg, out=paths["clean.safetensors"], force=force, reporter=reporter("NO-WM"))
    clean = verify(clean_model, mk, vk)
    say(f"[5/5] verify model without the watermark: {clean.summary()}")

    ok = wm.verified and not clean.verified
    seconds = time.perf_counter() - started
    text = "\n".join(
        [
            "backmark demo summary (Fashion-MNIST, " + recipe.model + ")",
            f"  watermarked: test {100 * wm_hist[-1].test_acc:.2f}%  trigger {wm.decision.matches}/{wm.decision.n}  p={wm.decision.p_value:.2e}  -> {'VERIFIED' if wm.verified else 'NOT verified'}",
            f"  clean:       test {100 * clean_hist[-1].test_acc:.2f}%  trigger {clean.decision.matches}/{clean.decision.n}  p={clean.decision.p_value:.2e}  -> {'VERIFIED' if clean.verified else 'rejected'}",
            f"  threshold {wm.decision.threshold}/{wm.decision.n} matches at alpha=2^-64; {seconds:.0f} s in all; files in {out}/",
            "  " + ("OK: the owner's model verifies, the independent one does not." if ok else "UNEXPECTED: see the rows above."),
        ]
    )
    return {
        "ok": ok,
        "seconds": seconds,
        "watermarked": {"test_acc": wm_hist[-1].test_acc, **wm.as_dict()},
        "clean": {"test_acc": clean_hist[-1].test_acc, **clean.as_dict()},
        "files": {k: str(v) for k, v in paths.items()},
        "text": text,
    }
