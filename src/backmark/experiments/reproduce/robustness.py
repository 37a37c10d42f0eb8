"""The robustness table: watermarking schemes x the attacks a thief would use, over several seeds.

    backmark reproduce --config experiments/configs/robustness-fmnist.json --out runs/robustness-fmnist --resume

A config with ``"kind": "robustness"`` (robustness_config.py) runs, for each seed:

1. one key per scheme (abstract triggers, or heldout training images: ``source``), and the
   dataset without every scheme's heldout images, so that every model of the seed, the
   attackers' included, trains on the same images and none of them sees a heldout trigger;
2. NO-WM and one FROMSCRATCH model per scheme (the scheme's ``train`` options over the run's:
   margin hardening, k...): test accuracy, its cost versus NO-WM, matches, training time;
3. then every attack, in the config's order, on every seed's model of every scheme (so a run cut
   short has its first attacks on all seeds; a seed's models are made when an attack first needs
   them; an attack may name fewer seeds or schemes), scored by :func:`backmark.attacks.evaluate_model`
   (black-box: what a verifier of a stolen model can do; for a detector-wrapped model also the
   share of triggers and test images flagged).

Every model is saved under OUT/seed-S/models/, so ``--resume`` skips what is done (models
served behind a filter, purifier or detector are rebuilt: they are quick). OUT/results.json
(rewritten after every row), OUT/report.md and OUT/robustness.png summarise over seeds: matches
mean and range, the largest p-value, verified seeds, test accuracy and its cost, wall times.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...attacks import AttackOutcome, ServedModel, attacked_meta, evaluate_model, get_attack, run_attack, save_attacked
from ...core.keygen import MarkingKey, VerificationKey, keygen, load_pair
from ...core.triggers import exclude_triggers
from ...crypto import OwnerKey
from ...data import Dataset, load_dataset
from ...io.clock import utc_now
from ...io.documents import write_json
from ...models.checkpoint import load_model
from ...training import EpochStats, Reporter, TrainConfig, default_device
from ...training.recipes import recipe_for
from ...version import __version__
from ..workflow import train_file
from .config import expand_path, train_config
from .robustness_config import RobustAttack, RobustnessConfig, SchemeConfig
from .robustness_render import summarise, write_robustness_outputs
from .run import _slug, git_commit, output_folder

RESULTS_FORMAT = "backmark-robustness-results"
RESULTS_VERSION = 1


@dataclass
class _Run:
    cfg: RobustnessConfig
    out: Path
    device: torch.device
    resume: bool
    say: Callable[[str], None]
    reporter: Callable[[str], Reporter | None]
    base: TrainConfig  # every model's recipe (capped), before the seed and the scheme
    model_name: str
    max_epochs: int | None
    results: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)

    def save(self) -> None:
        self.results["wall_seconds"] = time.perf_counter() - self.t0
        self.results["summary"] = summarise(self.results)
        write_json(self.out / "results.json", self.results, force=True, mode=0o644)


@dataclass
class _Seed:
    """One seed's keys, data (without any scheme's heldout triggers), NO-WM accuracy and marked models."""

    seed: int
    folder: Path
    data: Dataset
    keys: dict[str, tuple[MarkingKey, VerificationKey]]
    nowm_acc: float = 0.0
    victims: dict[str, tuple] = field(default_factory=dict)  # scheme -> (model, test accuracy, its TrainConfig)


def _model(run: _Run, path: Path, build: Callable[[Path], tuple]) -> tuple:
    """(model, history, seconds) from ``path`` under --resume, else built (and saved there by ``build``)."""
    if run.resume and path.exists():
        model, meta = load_model(path, device=run.device)
        run.say(f"  reusing {path}")
        return model, [EpochStats(**h) for h in meta.get("history") or []], meta.get("wall_seconds", 0.0)
    t0 = time.perf_counter()
    model, history = build(path)
    return model, history, time.perf_counter() - t0


def _keys(run: _Run, folder: Path, scheme: SchemeConfig, data: Dataset) -> tuple[MarkingKey, VerificationKey]:
    folder = folder / "keys" / _slug(scheme.name)
    mk_path, vk_path = folder / "marking-key.json", folder / "verification-key.json"
    if run.resume and mk_path.exists() and vk_path.exists():
        return load_pair(mk_path, vk_path)
    owner = OwnerKey.generate()
    mk, vk = keygen(input_shape=data.input_shape, num_classes=data.num_classes, owner_key=owner, set_size=run.cfg.key_size,
                    owner="backmark robustness", dataset=data.name,
                    heldout_from=data.train_x if scheme.source == "heldout" else None)
    owner.save(folder / "owner-key.pem", force=True)
    mk.save(mk_path, force=True)
    vk.save(vk_path, force=True)
    return mk, vk


def _verdict(w: dict) -> str:
    return "ownership verified" if w["verdict"] == "ownership" else f"not verified: {w['verdict']}"


def _budget(run: _Run, spec, options: dict, seed: int):
    """The attack's budget: the attacker's seed is the run's seed + 1 (never the owner's); epochs capped."""
    if "seed" in spec.budget.__dataclass_fields__ and "seed" not in options:
        options = {**options, "seed": seed + 1}
    budget = spec.make_budget(options)
    epochs = getattr(budget, "epochs", None)
    if run.max_epochs and isinstance(epochs, int) and epochs > run.max_epochs:
        budget = dataclasses.replace(budget, epochs=run.max_epochs)
    return budget


def run_robustness(
    cfg: RobustnessConfig,
    out_dir,
    *,
    quick: bool = False,
    max_epochs: int | None = None,
    device=None,
    resume: bool = False,
    force: bool = False,
    config_path: str | None = None,
    say: Callable[[str], None] = lambda m: None,
    reporter: Callable[[str], Reporter | None] = lambda label: None,
) -> dict:
    """Run every seed, scheme and attack of ``cfg``; returns the results document (also OUT/results.json)."""
    out = output_folder(out_dir, force=force, resume=resume)
    q = cfg.quick if quick else None
    if q is not None:
        max_epochs = min(q.max_epochs, max_epochs or q.max_epochs)
    recipe = recipe_for(cfg.dataset)
    base = train_config(recipe.train, cfg.train, "train")
    base = base.replace(epochs=min(base.epochs, max_epochs)) if max_epochs else base
    if q is not None and q.trigger_k is not None:
        base = base.replace(trigger_k=q.trigger_k)
    dev = torch.device(device) if device else default_device()
    run = _Run(cfg, out, dev, resume, say, reporter, base, cfg.model or recipe.model, max_epochs)
    train_size = min(q.train_size, cfg.train_size or q.train_size) if q else cfg.train_size
    test_size = min(q.test_size, cfg.test_size or q.test_size) if q else cfg.test_size
    run.results = {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "name": cfg.name, "description": cfg.description,
        "config": cfg.to_dict(), "config_path": config_path, "quick": quick, "max_epochs": max_epochs,
        "backmark": __version__, "git_commit": git_commit(), "torch": torch.__version__, "device": str(dev),
        "started": utc_now(), "model": run.model_name, "train_config": base.to_dict(), "seeds": [], "victims": [], "attacks": [],
    }
    full = load_dataset(cfg.dataset, expand_path(cfg.data_dir))
    seeds = cfg.seeds[: q.seeds] if q else cfg.seeds
    made: dict[int, _Seed] = {}

    def seed(s: int) -> _Seed:  # a seed's marked models, made when an attack first needs them
        if s not in made:
            made[s] = _marked_models(run, s, full, train_size, test_size)
        return made[s]

    for a in cfg.attacks:  # each attack on all its seeds before the next: a run cut short has whole rows first
        for s in seeds:
            if a.seeds is None or s in a.seeds:
                for sc in cfg.schemes:
                    if (a.schemes is None or sc.name in a.schemes) and sc.on(s):
                        _attack_row(run, a, seed(s), sc)
        write_robustness_outputs(run.results, out)
    for s in seeds:  # the marked models of a seed no attack asked for are in the table too
        seed(s)
    run.results["finished"] = utc_now()
    run.save()
    write_robustness_outputs(run.results, out)
    return run.results


def _marked_models(run: _Run, s: int, full: Dataset, train_size, test_size) -> _Seed:
    cfg = run.cfg
    data = full.subset(train_size, seed=s, test_size=test_size) if (train_size or test_size) else full
    sd = _Seed(s, run.out / f"seed-{s}", data, {})
    schemes = [sc for sc in cfg.schemes if sc.on(s)]  # a scheme may name fewer seeds
    sd.keys = {sc.name: _keys(run, sd.folder, sc, data) for sc in schemes}
    dropped = 0
    for sc in schemes:  # every model of the seed trains on the same images, none of them a heldout trigger
        data, n = exclude_triggers(data, sd.keys[sc.name][0].images)
        dropped += n
    sd.data = data
    run.results["dataset"] = data.describe()
    run.results["seeds"].append({"seed": s, "excluded_trigger_images": dropped, "train_images": len(data.train_y),
                                 "keys": {k: v[1].fingerprint for k, v in sd.keys.items()}})
    run.say(f"seed {s}: {data.describe()}; {dropped} heldout trigger images left out of every model's training set")
    cfg_s = run.base.replace(seed=s)
    nowm, _, s_nowm = _model(run, sd.folder / "models" / "nowm.safetensors", lambda p: train_file(
        data=data, model_name=run.model_name, cfg=cfg_s, out=p, force=True, device=run.device, reporter=run.reporter(f"NO-WM seed {s}")))
    sd.nowm_acc = evaluate_model(nowm, data.test_x, data.test_y, *next(iter(sd.keys.values())), alpha=cfg.alpha)["test_acc"]
    for sc in schemes:
        vcfg = train_config(cfg_s, sc.train, sc.name)
        m, h, secs = _model(run, sd.folder / "models" / f"victim-{_slug(sc.name)}.safetensors", lambda p, c=vcfg, sc=sc: train_file(
            data=data, model_name=run.model_name, cfg=c, out=p, keys=sd.keys[sc.name], force=True, device=run.device,
            reporter=run.reporter(f"{sc.name} seed {s}")))
        ev = evaluate_model(m, data.test_x, data.test_y, *sd.keys[sc.name], alpha=cfg.alpha)
        sd.victims[sc.name] = (m, ev["test_acc"], vcfg)
        w = ev["blackbox"]
        run.results["victims"].append({
            "seed": s, "scheme": sc.name, "source": sc.source, "config": vcfg.to_dict(), "test_acc": ev["test_acc"],
            "nowm_test_acc": sd.nowm_acc, "accuracy_cost": sd.nowm_acc - ev["test_acc"], "watermark": w, "seconds": secs,
            "nowm_seconds": s_nowm, "epochs": len(h)})
        run.say(f"  {sc.name}: test {100 * ev['test_acc']:.2f}% (NO-WM {100 * sd.nowm_acc:.2f}%), {w['matches']}/{w['n']} matches "
                f"({_verdict(w)}), {secs:.0f} s (NO-WM {s_nowm:.0f} s)")
        run.save()
    return sd


def _attack_row(run: _Run, a: RobustAttack, sd: _Seed, sc: SchemeConfig) -> None:
    victim, before, vcfg = sd.victims[sc.name]
    budget = _budget(run, get_attack(a.attack), a.budget, sd.seed)
    outcome = _attack(run, a, sd, sc, victim, budget, vcfg)
    ev = evaluate_model(outcome.model, sd.data.test_x, sd.data.test_y, *sd.keys[sc.name], alpha=run.cfg.alpha)
    w = ev["blackbox"]
    run.results["attacks"].append({
        "seed": sd.seed, "scheme": sc.name, "label": a.name, "attack": a.attack, "budget": budget.to_dict(),
        "test_acc_before": before, "test_acc": ev["test_acc"], "nowm_test_acc": sd.nowm_acc, "watermark": w,
        "detector": ev.get("detector"), "notes": outcome.notes, "seconds": outcome.seconds, "epochs": len(outcome.history)})
    run.say(f"  seed {sd.seed} {a.name:>24s} on {sc.name}: test {100 * ev['test_acc']:.2f}%, {w['matches']}/{w['n']} matches "
            f"({_verdict(w)}), {outcome.seconds:.0f} s")
    run.save()


def _attack(run: _Run, a: RobustAttack, sd: _Seed, sc: SchemeConfig, victim, budget, vcfg: TrainConfig) -> AttackOutcome:
    path = sd.folder / "models" / f"attack-{_slug(a.name)}-{_slug(sc.name)}.safetensors"
    if run.resume and path.exists():
        model, meta = load_model(path, device=run.device)
        rec = meta["attack"]
        run.say(f"  reusing {path}")
        notes = {k: v for k, v in rec.items() if k not in ("attack", "budget", "seconds", "epochs", "victim")}
        return AttackOutcome(a.attack, budget, model, [EpochStats(**h) for h in meta.get("history") or []], rec["seconds"], notes)
    outcome = run_attack(a.attack, victim, sd.data, budget, original=vcfg, model_name=run.model_name, device=run.device,
                         reporter=run.reporter(f"{a.name} on {sc.name}, seed {sd.seed}"))
    if not isinstance(outcome.model, ServedModel):  # a served model is rebuilt on resume: its wrapper is no checkpoint
        d = sd.data
        meta = {"model": run.model_name, "num_classes": d.num_classes, "input_shape": list(d.input_shape), "mean": list(d.mean),
                "std": list(d.std), "dataset": d.name}
        save_attacked(path, outcome, attacked_meta(outcome, meta, victim_path=sc.name), force=True)
    return outcome
