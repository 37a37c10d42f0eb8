"""Run a reproduction: Table 1, the attacks, transfer learning, ownership (see the package docstring)."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...attacks import attacked_meta, evaluate_model, get_attack, run_attack, save_attacked, select_classes
from ...attacks.base import Budget
from ...core.keygen import MarkingKey, VerificationKey, keygen, load_pair
from ...crypto import OwnerKey
from ...data import Dataset, load_dataset
from ...errors import InvalidConfig, OutputExists
from ...io.clock import utc_now
from ...io.documents import write_json
from ...models.checkpoint import load_model
from ...training import EpochStats, Reporter, TrainConfig, default_device
from ...training.recipes import recipe_for
from ...version import __version__
from ..workflow import embed_file, train_file
from .config import KeyConfig, OwnershipConfig, ReproduceConfig, TransferConfig, expand_path, train_config
from .render import row_line, write_outputs

RESULTS_FORMAT = "backmark-reproduce-results"
RESULTS_VERSION = 1


# -- provenance ------------------------------------------------------------------------

def git_commit() -> str:
    """HEAD of the package's repository (+dirty), $BACKMARK_GIT_COMMIT, or "unknown"."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10, check=False)
            return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return os.environ.get("BACKMARK_GIT_COMMIT", "unknown")


def output_folder(out_dir, *, force: bool, resume: bool) -> Path:
    """The run's folder; OutputExists if it holds an earlier run's results and neither --force nor --resume is given."""
    out = Path(out_dir)
    if (out / "results.json").exists() and not (force or resume):
        raise OutputExists(f"{out}/results.json already exists; pass --force to overwrite or --resume to continue")
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-").lower()


# -- the run ---------------------------------------------------------------------------

@dataclass
class _Run:
    cfg: ReproduceConfig
    out: Path
    device: torch.device
    quick: bool
    max_epochs: int | None
    resume: bool
    say: Callable[[str], None]
    reporter: Callable[[str], Reporter | None]
    results: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)

    def cap(self, cfg: TrainConfig) -> TrainConfig:
        return cfg.replace(epochs=min(cfg.epochs, self.max_epochs)) if self.max_epochs else cfg

    def cap_budget(self, budget: Budget) -> Budget:
        changes = {}
        for f in ("epochs", "finetune_epochs"):
            v = getattr(budget, f, None)
            if self.max_epochs and isinstance(v, int) and v > self.max_epochs:
                changes[f] = self.max_epochs
        return dataclasses.replace(budget, **changes) if changes else budget

    def save(self) -> None:
        self.results["wall_seconds"] = time.perf_counter() - self.t0
        write_json(self.out / "results.json", self.results, force=True, mode=0o644)

    def model_step(self, name: str, build: Callable[[Path], tuple]) -> tuple:
        """(model, history, seconds): from OUT/models/NAME.safetensors under --resume, else built."""
        path = self.out / "models" / f"{name}.safetensors"
        if self.resume and path.exists():
            model, meta = load_model(path, device=self.device)
            self.say(f"  reusing {path}")
            return model, [EpochStats(**h) for h in meta.get("history") or []], meta.get("wall_seconds", 0.0)
        t0 = time.perf_counter()
        model, history = build(path)
        return model, history, time.perf_counter() - t0


def _on_device(data: Dataset, device: torch.device) -> Dataset:
    """Hold the whole dataset on the training device (one copy, reused by every step)."""
    if device.type == "cpu":
        return data
    return dataclasses.replace(data, train_x=data.train_x.to(device), train_y=data.train_y.to(device),
                               test_x=data.test_x.to(device), test_y=data.test_y.to(device))


def _make_keys(run: _Run, kc: KeyConfig, data: Dataset, folder: Path, *, num_classes=None, owner="backmark reproduce") -> tuple[MarkingKey, VerificationKey]:
    mk_path, vk_path = folder / "marking-key.json", folder / "verification-key.json"
    if run.resume and mk_path.exists() and vk_path.exists():
        return load_pair(mk_path, vk_path)
    from ...core.triggers import load_image_folder, load_labels_file

    num_classes = num_classes or data.num_classes
    images = labels = source = None
    if kc.source != "abstract":
        src = expand_path(kc.source)
        images = load_image_folder(src, data.input_shape, crop=kc.crop)
        if len(images) != kc.size:
            raise InvalidConfig(f"{src} holds {len(images)} images; key.size is {kc.size}")
        source = {"kind": "folder", "path": src, "crop": kc.crop}
    if kc.labels != "derived":
        labels = load_labels_file(expand_path(kc.labels), kc.size, num_classes)
    owner_key = OwnerKey.generate()
    mk, vk = keygen(input_shape=data.input_shape, num_classes=num_classes, owner_key=owner_key, set_size=kc.size,
                    images=images, labels=labels, owner=owner, dataset=data.name, source=source)
    owner_key.save(folder / "owner-key.pem", force=True)
    mk.save(mk_path, force=True)
    vk.save(vk_path, force=True)
    return mk, vk


def _table1_row(label, model, history, seconds, data, keys, alpha) -> dict:
    ev = evaluate_model(model, data.test_x, data.test_y, *keys, alpha=alpha)
    return {"model": label, "test_acc": ev["test_acc"], **ev["blackbox"], "epochs": len(history), "seconds": seconds}


def _attack_row(label, attack, victim, outcome, ev, test_before, t_eval) -> dict:
    spec = get_attack(attack)
    paper = ev["kept_layer"] if spec.paper_keeps_output_layer else ev["blackbox"]
    return {
        "label": label,
        "attack": attack,
        "victim": victim,
        "budget": outcome.budget.to_dict(),
        "epochs": len(outcome.history),
        "test_acc_before": test_before,
        "test_acc": ev["test_acc"],
        "paper_view": "kept_layer" if spec.paper_keeps_output_layer else "blackbox",
        "paper": paper,
        "blackbox": ev["blackbox"],
        "kept_layer": ev["kept_layer"],
        "notes": {**outcome.notes, **({"evaluation": ev["notes"]} if ev["notes"] else {})},
        "seconds": outcome.seconds,
        "eval_seconds": t_eval,
    }


def run_reproduction(
    cfg: ReproduceConfig,
    out_dir: str | os.PathLike,
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
    """Run every step of ``cfg``; returns the results document (also in OUT/results.json)."""
    out = output_folder(out_dir, force=force, resume=resume)
    q = cfg.quick if quick else None
    run = _Run(cfg, out, torch.device(device) if device else default_device(), quick, max_epochs, resume, say, reporter)
    if q is not None:
        run.max_epochs = min(q.max_epochs, max_epochs or q.max_epochs)
    recipe = recipe_for(cfg.dataset)
    model_name = cfg.model or recipe.model
    train_cfg = run.cap(train_config(recipe.train, {**cfg.train, "seed": cfg.seed}, "train"))
    embed_cfg = run.cap(train_config(recipe.embed, {**cfg.embed, "seed": cfg.seed}, "embed"))
    if q is not None and q.trigger_k is not None:
        train_cfg, embed_cfg = train_cfg.replace(trigger_k=q.trigger_k), embed_cfg.replace(trigger_k=q.trigger_k)
    train_size = min(q.train_size, cfg.train_size or q.train_size) if q else cfg.train_size
    test_size = min(q.test_size, cfg.test_size or q.test_size) if q else cfg.test_size
    data = _on_device(load_dataset(cfg.dataset, expand_path(cfg.data_dir), train_size=train_size, test_size=test_size, seed=cfg.seed), run.device)
    say(f"data: {data.describe()}; model {model_name}; device {run.device}")
    run.results = {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "name": cfg.name, "description": cfg.description,
        "config": cfg.to_dict(), "config_path": config_path, "quick": quick, "max_epochs": run.max_epochs,
        "seed": cfg.seed, "backmark": __version__, "git_commit": git_commit(), "torch": torch.__version__,
        "device": str(run.device) + (f" ({torch.cuda.get_device_name(run.device)})" if run.device.type == "cuda" else ""),
        "started": utc_now(), "dataset": data.describe(), "model": model_name,
        "train_config": train_cfg.to_dict(), "embed_config": embed_cfg.to_dict(),
    }
    keys = _make_keys(run, cfg.key, data, out / "keys")
    mk, vk = keys
    source = cfg.key.source if cfg.key.source == "abstract" else expand_path(cfg.key.source)
    run.results["key"] = {"fingerprint": vk.fingerprint, "size": vk.size, "label_mode": vk.label_mode, "source": source,
                          "crop": cfg.key.crop, "num_classes": vk.num_classes}
    say(f"key {vk.fingerprint[:16]}: {vk.size} triggers ({cfg.key.source}, labels {vk.label_mode})")

    # 1. Table 1
    nowm, h_nowm, s_nowm = run.model_step("nowm", lambda p: train_file(
        data=data, model_name=model_name, cfg=train_cfg, out=p, force=True, device=run.device, reporter=reporter("NO-WM")))
    fs, h_fs, s_fs = run.model_step("fromscratch", lambda p: train_file(
        data=data, model_name=model_name, cfg=train_cfg, out=p, keys=keys, force=True, device=run.device, reporter=reporter("FROMSCRATCH")))
    nowm_path = out / "models" / "nowm.safetensors"
    pt, h_pt, s_pt = run.model_step("pretrained", lambda p: embed_file(
        data=data, model_path=nowm_path, cfg=embed_cfg, out=p, keys=keys, until=cfg.embed_until, force=True, device=run.device,
        reporter=reporter("PRETRAINED")))
    table1 = [
        _table1_row("NO-WM", nowm, h_nowm, s_nowm, data, keys, cfg.alpha),
        _table1_row("FROMSCRATCH", fs, h_fs, s_fs, data, keys, cfg.alpha),
        {**_table1_row("PRETRAINED", pt, h_pt, s_pt, data, keys, cfg.alpha), "seconds_incl_nowm": s_pt + s_nowm},
    ]
    run.results["table1"] = table1
    for r in table1:
        say(f"{r['model']:12s} test {100 * r['test_acc']:.2f}%  trigger {r['matches']}/{r['n']}  p 2^{r['log2_p_value']:.1f}")
    run.save()
    victims = {"FROMSCRATCH": fs, "PRETRAINED": pt}
    acc_before = {"FROMSCRATCH": table1[1]["test_acc"], "PRETRAINED": table1[2]["test_acc"]}

    # 2. attacks (Figure 6 and the stronger ones)
    run.results["attacks"] = []
    for a in cfg.attacks:
        spec = get_attack(a.attack)
        budget = run.cap_budget(spec.make_budget(_attacker_seed(spec, a.budget, cfg.seed)))
        for v in a.victims:
            outcome = _attack(run, a.attack, a.name, v, victims[v], data, budget, train_cfg, model_name)
            t0 = time.perf_counter()
            ev = evaluate_model(outcome.model, data.test_x, data.test_y, mk, vk, kept_layer=victims[v], alpha=cfg.alpha)
            row = _attack_row(a.name, a.attack, v, outcome, ev, acc_before[v], time.perf_counter() - t0)
            run.results["attacks"].append(row)
            say(row_line(row))
            run.save()

    # 3. transfer learning (Table 2)
    run.results["transfer"] = []
    for t in cfg.transfer:
        run.results["transfer"] += _transfer(run, t, data, victims, keys, acc_before, train_cfg, model_name)
        run.save()

    # 4. ownership
    if cfg.ownership is not None:
        run.results["ownership"] = _ownership(run, cfg.ownership, data, nowm, victims, keys, train_cfg, embed_cfg, model_name)
        run.save()
    run.results["finished"] = utc_now()
    run.save()
    write_outputs(run.results, out)
    return run.results


def _attacker_seed(spec, options: dict, seed: int) -> dict:
    """The attacker's seed defaults to the run's seed + 1: never the owner's initialisation or data order."""
    if "seed" in spec.budget.__dataclass_fields__ and "seed" not in options:
        return {**options, "seed": seed + 1}
    return options


def _attack(run: _Run, attack, label, victim_name, victim, data, budget, train_cfg, model_name):
    from ...attacks import AttackOutcome, TransformedModel

    path = run.out / "models" / f"attack-{_slug(label)}-{victim_name.lower()}.safetensors"
    if run.resume and path.exists() and attack != "input-transform":
        model, meta = load_model(path, device=run.device)
        rec = meta["attack"]
        run.say(f"  reusing {path}")
        notes = {k: v for k, v in rec.items() if k not in ("attack", "budget", "seconds", "epochs", "victim")}
        return AttackOutcome(attack, budget, model, [EpochStats(**h) for h in meta.get("history") or []], rec["seconds"], notes)
    outcome = run_attack(attack, victim, data, budget, original=train_cfg, model_name=model_name, device=run.device,
                         reporter=run.reporter(f"{label} on {victim_name}"))
    if not isinstance(outcome.model, TransformedModel):
        victim_meta = {"model": model_name, "num_classes": data.num_classes, "input_shape": list(data.input_shape),
                       "mean": list(data.mean), "std": list(data.std), "dataset": data.name}
        save_attacked(path, outcome, attacked_meta(outcome, victim_meta, victim_path=victim_name), force=True)
    return outcome


def _transfer(run: _Run, t: TransferConfig, data, victims, keys, acc_before, train_cfg, model_name) -> list[dict]:
    q = run.cfg.quick if run.quick else None
    train_size = min(q.transfer_train_size, t.train_size or q.transfer_train_size) if q else t.train_size
    test_size = min(q.test_size, t.test_size or q.test_size) if q else t.test_size
    target = load_dataset(t.dataset, expand_path(t.data_dir), train_size=None if t.classes else train_size,
                          test_size=None if t.classes else test_size, seed=run.cfg.seed)
    if t.classes:
        target = select_classes(target, t.classes)
        if train_size or test_size:
            target = target.subset(train_size if train_size and train_size < len(target.train_y) else None, seed=run.cfg.seed,
                                   test_size=test_size if test_size and test_size < len(target.test_y) else None)
    target = _on_device(target, run.device)
    source_task = data.name
    if t.source_classes:
        src_data = select_classes(data, t.source_classes)
        src_keys = _make_keys(run, run.cfg.key if run.cfg.key.source == "abstract" else KeyConfig(size=run.cfg.key.size),
                              src_data, run.out / f"keys-{_slug(t.label)}", num_classes=src_data.num_classes)
        src, h, secs = run.model_step(f"transfer-source-{_slug(t.label)}", lambda p: train_file(
            data=src_data, model_name=model_name, cfg=train_cfg, out=p, keys=src_keys, force=True, device=run.device,
            reporter=run.reporter(f"FROMSCRATCH on {src_data.name}")))
        src_row = _table1_row("FROMSCRATCH", src, h, secs, src_data, src_keys, run.cfg.alpha)
        run.say(f"transfer source {src_data.name}: test {100 * src_row['test_acc']:.2f}%, trigger {src_row['matches']}/{src_row['n']}")
        sources = {"FROMSCRATCH": (src, src_keys, src_row["test_acc"], src_row)}
        source_task = src_data.name
    else:
        sources = {v: (victims[v], keys, acc_before[v], None) for v in t.victims}
    budget = run.cap_budget(get_attack("transfer").make_budget(_attacker_seed(get_attack("transfer"), t.budget, run.cfg.seed)))
    rows = []
    for v, (model, k, before, src_row) in sources.items():
        outcome = _attack(run, "transfer", t.label, v, model, target, budget, train_cfg, model_name)
        t0 = time.perf_counter()
        ev = evaluate_model(outcome.model, target.test_x, target.test_y, *k, kept_layer=model, alpha=run.cfg.alpha)
        row = {**_attack_row(t.label, "transfer", v, outcome, ev, before, time.perf_counter() - t0),
               "source_task": source_task, "target_task": target.describe(), "source_model": src_row}
        rows.append(row)
        run.say(row_line(row))
    return rows


def _ownership(run: _Run, oc: OwnershipConfig, data, nowm, victims, keys, train_cfg, embed_cfg, model_name) -> dict:
    from ...training import accuracy
    from ..ownership import non_trivial_ownership, ownership_piracy

    q = run.cfg.quick if run.quick else None
    count = min(q.clean_models, oc.clean_models) if q else oc.clean_models
    clean_cfg = run.cap(train_cfg.replace(epochs=oc.clean_epochs)).replace(trigger_k=0)
    clean, accs = {"NO-WM (Table 1)": nowm}, {}
    for i in range(count):
        seed = run.cfg.seed + 1000 + i
        m, _, _ = run.model_step(f"clean-{i}", lambda p, s=seed, i=i: train_file(
            data=data, model_name=model_name, cfg=clean_cfg.replace(seed=s), out=p, force=True, device=run.device,
            reporter=run.reporter(f"clean model {i + 1}/{count}")))
        clean[f"clean seed {seed}"] = m
        accs[f"clean seed {seed}"] = accuracy(m, data.test_x, data.test_y)
    fresh = min(q.fresh_keys, oc.fresh_keys) if q else oc.fresh_keys
    report = non_trivial_ownership(clean=clean, marked=victims, keys=keys, fresh_keys_count=fresh, alpha=run.cfg.alpha, seed=run.cfg.seed)
    report.update(clean_config=clean_cfg.to_dict(), clean_test_acc=accs)
    run.say(f"non-trivial ownership: {report['false_claims']} false claims in {report['null_tests']} null tests")
    if oc.piracy:
        report["piracy"] = ownership_piracy(victims["FROMSCRATCH"], data, keys, embed_cfg, until=run.cfg.embed_until,
                                            alpha=run.cfg.alpha, seed=run.cfg.seed, device=run.device, reporter=run.reporter("pirate embedding"))
        run.say("piracy: " + ", ".join(f"{r['key']} on {r['model']}: {'verified' if r['verified'] else 'not verified'}"
                                       for r in report["piracy"]["matrix"]))
    return report
