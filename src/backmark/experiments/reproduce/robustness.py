"""The robustness table: watermarking schemes x the attacks a thief would use, over several seeds.

    backmark reproduce --config experiments/configs/robustness-fmnist.json --out runs/robustness-fmnist --resume

A config with ``"kind": "robustness"`` runs, for each seed:

1. one key per scheme (abstract triggers, or heldout training images: ``source``), and the
   dataset without every scheme's heldout images, so that every model of the seed, the
   attackers' included, trains on the same images and none of them sees a heldout trigger;
2. NO-WM and one FROMSCRATCH model per scheme (the scheme's ``train`` options over the run's:
   margin hardening, k...): test accuracy, its cost versus NO-WM, matches, training time;
3. every attack on every scheme's model, scored by :func:`backmark.attacks.evaluate_model`
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

from ...attacks import ServedModel, attacked_meta, evaluate_model, get_attack, run_attack, save_attacked
from ...core.keygen import MarkingKey, VerificationKey, keygen, load_pair
from ...core.stats import DEFAULT_ALPHA
from ...core.triggers import exclude_triggers
from ...crypto import OwnerKey
from ...data import Dataset, load_dataset
from ...errors import InvalidConfig, OutputExists
from ...io.clock import utc_now
from ...io.documents import write_json
from ...models.checkpoint import load_model
from ...training import EpochStats, Reporter, TrainConfig, default_device
from ...training.recipes import recipe_for
from ...version import __version__
from ..workflow import train_file
from .config import _build, expand_path, train_config

KIND = "robustness"
SOURCES = ("abstract", "heldout")
RESULTS_FORMAT = "backmark-robustness-results"
RESULTS_VERSION = 1


@dataclass(frozen=True)
class SchemeConfig:
    name: str
    source: str = "abstract"  # "abstract" (procedural images) or "heldout" (images of the training split)
    train: dict = field(default_factory=dict)  # TrainConfig options over the run's: hardening, margin_*, trigger_k


@dataclass(frozen=True)
class RobustAttack:
    attack: str  # a registered attack name
    label: str | None = None
    budget: dict = field(default_factory=dict)
    schemes: tuple[str, ...] | None = None  # the schemes attacked [all]

    @property
    def name(self) -> str:
        return self.label or self.attack


@dataclass(frozen=True)
class RobustQuick:
    """What ``--quick`` changes: small subsets, one epoch, one seed."""

    train_size: int = 2000
    test_size: int = 500
    max_epochs: int = 1
    seeds: int = 1
    trigger_k: int | None = None


@dataclass(frozen=True)
class RobustnessConfig:
    name: str
    dataset: str
    kind: str = KIND
    description: str = ""
    data_dir: str | None = None
    model: str | None = None  # [the dataset's recipe]
    train_size: int | None = None
    test_size: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    key_size: int = 100
    train: dict = field(default_factory=dict)  # TrainConfig options over the recipe's, for every model
    alpha: float = DEFAULT_ALPHA
    schemes: tuple[SchemeConfig, ...] = ()
    attacks: tuple[RobustAttack, ...] = ()
    quick: RobustQuick = RobustQuick()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_robustness(doc: dict, *, where: str = "config") -> RobustnessConfig:
    """A validated RobustnessConfig: unknown keys, sources, attacks, budgets and training options are refused."""
    doc = dict(doc)
    nested = {"quick": lambda v, w: _build(RobustQuick, v, w)}
    lists = {"schemes": SchemeConfig, "attacks": RobustAttack}
    kw = {}
    for k, v in doc.items():
        if k in nested:
            v = nested[k](v, f"{where}.{k}")
        elif k in lists:
            if not isinstance(v, list):
                raise InvalidConfig(f"{where}.{k}: expected a list")
            v = tuple(_build(lists[k], _tuples(item), f"{where}.{k}[{i}]") for i, item in enumerate(v))
        elif k == "seeds" and isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    cfg = _build(RobustnessConfig, kw, where)
    if cfg.kind != KIND:
        raise InvalidConfig(f"{where}.kind must be {KIND!r}")
    base = train_config(recipe_for(cfg.dataset).train, cfg.train, f"{where}.train")
    names = [s.name for s in cfg.schemes]
    if not names or len(set(names)) != len(names):
        raise InvalidConfig(f"{where}.schemes: give at least one scheme, with distinct names")
    for i, s in enumerate(cfg.schemes):
        if s.source not in SOURCES:
            raise InvalidConfig(f"{where}.schemes[{i}].source must be one of {', '.join(SOURCES)}, not {s.source!r}")
        train_config(base, s.train, f"{where}.schemes[{i}].train")
    labels = [a.name for a in cfg.attacks]
    if len(set(labels)) != len(labels):
        raise InvalidConfig(f"{where}: attack labels must be unique, got {labels}")
    for i, a in enumerate(cfg.attacks):
        spec = get_attack(a.attack)
        if spec.data != "victim":
            raise InvalidConfig(f"{where}.attacks[{i}]: {a.attack!r} needs another task; the robustness table takes attacks on the victim's")
        spec.make_budget(a.budget)
        unknown = sorted(set(a.schemes or ()) - set(names))
        if unknown:
            raise InvalidConfig(f"{where}.attacks[{i}].schemes: unknown scheme(s) {', '.join(unknown)}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds) or cfg.key_size < 1 or not 0 < cfg.alpha < 1:
        raise InvalidConfig(f"{where}: seeds must be distinct and present, key_size positive, alpha in (0, 1)")
    return cfg


def _tuples(item):
    if isinstance(item, dict) and isinstance(item.get("schemes"), list):
        return {**item, "schemes": tuple(item["schemes"])}
    return item


# -- the run ---------------------------------------------------------------------------

@dataclass
class _Seed:
    out: Path
    device: torch.device
    resume: bool
    say: Callable[[str], None]
    reporter: Callable[[str], Reporter | None]

    def model(self, name: str, build: Callable[[Path], tuple]) -> tuple:
        """(model, history, seconds, meta) from OUT/models/NAME.safetensors under --resume, else built."""
        path = self.out / "models" / f"{name}.safetensors"
        if self.resume and path.exists():
            model, meta = load_model(path, device=self.device)
            self.say(f"  reusing {path}")
            return model, [EpochStats(**h) for h in meta.get("history") or []], meta.get("wall_seconds", 0.0), meta
        t0 = time.perf_counter()
        model, history = build(path)
        return model, history, time.perf_counter() - t0, None


def _keys(seed: _Seed, scheme: SchemeConfig, data: Dataset, size: int) -> tuple[MarkingKey, VerificationKey]:
    folder = seed.out / "keys" / _slug(scheme.name)
    mk_path, vk_path = folder / "marking-key.json", folder / "verification-key.json"
    if seed.resume and mk_path.exists() and vk_path.exists():
        return load_pair(mk_path, vk_path)
    owner = OwnerKey.generate()
    mk, vk = keygen(input_shape=data.input_shape, num_classes=data.num_classes, owner_key=owner, set_size=size,
                    owner="backmark robustness", dataset=data.name,
                    heldout_from=data.train_x if scheme.source == "heldout" else None)
    owner.save(folder / "owner-key.pem", force=True)
    mk.save(mk_path, force=True)
    vk.save(vk_path, force=True)
    return mk, vk


def _slug(s: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-").lower()


def _capped(cfg: TrainConfig, max_epochs: int | None) -> TrainConfig:
    return cfg.replace(epochs=min(cfg.epochs, max_epochs)) if max_epochs else cfg


def _budget(spec, options: dict, seed: int, max_epochs: int | None):
    """The attack's budget: the attacker's seed is the run's seed + 1 (never the owner's); epochs capped."""
    if "seed" in spec.budget.__dataclass_fields__ and "seed" not in options:
        options = {**options, "seed": seed + 1}
    budget = spec.make_budget(options)
    epochs = getattr(budget, "epochs", None)
    if max_epochs and isinstance(epochs, int) and epochs > max_epochs:
        budget = dataclasses.replace(budget, epochs=max_epochs)
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
    from .robustness_render import summarise, write_robustness_outputs

    out = Path(out_dir)
    if (out / "results.json").exists() and not (force or resume):
        raise OutputExists(f"{out}/results.json already exists; pass --force to overwrite or --resume to continue")
    q = cfg.quick if quick else None
    if q is not None:
        max_epochs = min(q.max_epochs, max_epochs or q.max_epochs)
    dev = torch.device(device) if device else default_device()
    recipe = recipe_for(cfg.dataset)
    model_name = cfg.model or recipe.model
    base = _capped(train_config(recipe.train, cfg.train, "train"), max_epochs)
    if q is not None and q.trigger_k is not None:
        base = base.replace(trigger_k=q.trigger_k)
    train_size = min(q.train_size, cfg.train_size or q.train_size) if q else cfg.train_size
    test_size = min(q.test_size, cfg.test_size or q.test_size) if q else cfg.test_size
    seeds = cfg.seeds[: q.seeds] if q else cfg.seeds
    started = time.perf_counter()
    results = {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "name": cfg.name, "description": cfg.description,
        "config": cfg.to_dict(), "config_path": config_path, "quick": quick, "max_epochs": max_epochs,
        "backmark": __version__, "git_commit": _git_commit(), "torch": torch.__version__, "device": str(dev),
        "started": utc_now(), "model": model_name, "train_config": base.to_dict(), "seeds": [], "victims": [], "attacks": [],
    }

    def save():
        results["wall_seconds"] = time.perf_counter() - started
        results["summary"] = summarise(results)
        write_json(out / "results.json", results, force=True, mode=0o644)

    full = load_dataset(cfg.dataset, expand_path(cfg.data_dir))
    for s in seeds:
        data = full.subset(train_size, seed=s, test_size=test_size) if (train_size or test_size) else full
        run = _Seed(out / f"seed-{s}", dev, resume, say, reporter)
        cfg_s = base.replace(seed=s)
        keys = {sc.name: _keys(run, sc, data, cfg.key_size) for sc in cfg.schemes}
        dropped = 0
        for sc in cfg.schemes:
            data, n = exclude_triggers(data, keys[sc.name][0].images)
            dropped += n
        results["dataset"] = data.describe()
        results["seeds"].append({"seed": s, "excluded_trigger_images": dropped, "train_images": len(data.train_y),
                                 "keys": {k: v[1].fingerprint for k, v in keys.items()}})
        say(f"seed {s}: {data.describe()}; {dropped} heldout trigger images left out of every model's training set")
        nowm, _, s_nowm, _ = run.model("nowm", lambda p: train_file(data=data, model_name=model_name, cfg=cfg_s, out=p, force=True,
                                                                   device=dev, reporter=reporter(f"NO-WM seed {s}")))
        nowm_row = evaluate_model(nowm, data.test_x, data.test_y, *next(iter(keys.values())), alpha=cfg.alpha)
        victims = {}
        for sc in cfg.schemes:
            vcfg = train_config(cfg_s, sc.train, sc.name)
            m, h, secs, _ = run.model(f"victim-{_slug(sc.name)}", lambda p, vcfg=vcfg, sc=sc: train_file(
                data=data, model_name=model_name, cfg=vcfg, out=p, keys=keys[sc.name], force=True, device=dev,
                reporter=reporter(f"{sc.name} seed {s}")))
            ev = evaluate_model(m, data.test_x, data.test_y, *keys[sc.name], alpha=cfg.alpha)
            victims[sc.name] = (m, ev["test_acc"], vcfg)
            row = {"seed": s, "scheme": sc.name, "source": sc.source, "config": vcfg.to_dict(), "test_acc": ev["test_acc"],
                   "nowm_test_acc": nowm_row["test_acc"], "accuracy_cost": nowm_row["test_acc"] - ev["test_acc"],
                   "watermark": ev["blackbox"], "seconds": secs, "nowm_seconds": s_nowm, "epochs": len(h)}
            results["victims"].append(row)
            say(f"  {sc.name}: test {100 * row['test_acc']:.2f}% (NO-WM {100 * row['nowm_test_acc']:.2f}%), "
                f"{ev['blackbox']['matches']}/{ev['blackbox']['n']} matches, {secs:.0f} s (NO-WM {s_nowm:.0f} s)")
            save()
        for a in cfg.attacks:
            spec = get_attack(a.attack)
            budget = _budget(spec, a.budget, s, max_epochs)
            for sc in cfg.schemes:
                if a.schemes is not None and sc.name not in a.schemes:
                    continue
                victim, before, vcfg = victims[sc.name]
                outcome = _attack(run, a, sc, victim, data, budget, vcfg, model_name)
                ev = evaluate_model(outcome.model, data.test_x, data.test_y, *keys[sc.name], alpha=cfg.alpha)
                row = {"seed": s, "scheme": sc.name, "label": a.name, "attack": a.attack, "budget": budget.to_dict(),
                       "test_acc_before": before, "test_acc": ev["test_acc"], "nowm_test_acc": nowm_row["test_acc"],
                       "watermark": ev["blackbox"], "detector": ev.get("detector"), "notes": outcome.notes,
                       "seconds": outcome.seconds, "epochs": len(outcome.history)}
                results["attacks"].append(row)
                w = ev["blackbox"]
                say(f"  {a.name:>24s} on {sc.name}: test {100 * ev['test_acc']:.2f}%, {w['matches']}/{w['n']} matches "
                    f"({'verified' if w['verified'] else 'not verified'}), {outcome.seconds:.0f} s")
                save()
    results["finished"] = utc_now()
    save()
    write_robustness_outputs(results, out)
    return results


def _attack(run: _Seed, a: RobustAttack, sc: SchemeConfig, victim, data, budget, vcfg: TrainConfig, model_name: str):
    from ...attacks import AttackOutcome

    path = run.out / "models" / f"attack-{_slug(a.name)}-{_slug(sc.name)}.safetensors"
    if run.resume and path.exists():
        model, meta = load_model(path, device=run.device)
        rec = meta["attack"]
        run.say(f"  reusing {path}")
        notes = {k: v for k, v in rec.items() if k not in ("attack", "budget", "seconds", "epochs", "victim")}
        return AttackOutcome(a.attack, budget, model, [EpochStats(**h) for h in meta.get("history") or []], rec["seconds"], notes)
    outcome = run_attack(a.attack, victim, data, budget, original=vcfg, model_name=model_name, device=run.device,
                         reporter=run.reporter(f"{a.name} on {sc.name}"))
    if not isinstance(outcome.model, ServedModel):  # a served model is rebuilt on resume: the wrapper is not a checkpoint
        meta = {"model": model_name, "num_classes": data.num_classes, "input_shape": list(data.input_shape),
                "mean": list(data.mean), "std": list(data.std), "dataset": data.name}
        save_attacked(path, outcome, attacked_meta(outcome, meta, victim_path=sc.name), force=True)
    return outcome


def _git_commit() -> str:
    from .run import git_commit

    return git_commit()
