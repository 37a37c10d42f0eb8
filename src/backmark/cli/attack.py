"""Attack and reproduction commands: ``attack NAME`` and ``reproduce``."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .app import main
from .common import emit, factory_option, handle_errors, load_keys, normalization, normalization_options, parse_alpha

# CLI option -> budget field; an option the chosen attack's budget lacks is refused.
BUDGET_OPTIONS = {
    "epochs": click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs [the victim's; transfer 10; purify, evasion 5]."),
    "lr": click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate [0.01; distill: the victim's]."),
    "schedule": click.option("--schedule", type=click.Choice(["onecycle", "cosine", "step", "constant"]), default=None, help="LR schedule [constant]."),
    "batch_size": click.option("--batch-size", type=click.IntRange(1), default=None, help="Batch size [the victim's]."),
    "data_fraction": click.option("--data-fraction", type=click.FloatRange(0, 1, min_open=True), default=None, help="Share of the training set the attacker holds [1.0]."),
    "augment": click.option("--augment/--no-augment", default=None, help="Random crop + flip [as the victim]."),
    "seed": click.option("--seed", type=int, default=None, help="Seed for data order, new layers, noise [0]."),
    "layers": click.option("--layers", type=click.Choice(["all", "last"]), default=None, help="transfer: train all layers or the new last one [all]."),
    "amount": click.option("--amount", type=float, default=None, help="prune: share of weights zeroed; fine-prune: share of channels [0.5]."),
    "scope": click.option("--scope", type=click.Choice(["global", "layer"]), default=None, help="prune: one threshold for all layers or per layer [global]."),
    "finetune_epochs": click.option("--finetune-epochs", type=click.IntRange(0), default=None, help="prune: clean epochs after pruning [0]."),
    "samples": click.option("--samples", type=click.IntRange(1), default=None, help="fine-prune: clean images to measure activity [5000]."),
    "student": click.option("--student", default=None, help="distill: architecture of the fresh model [the victim's]."),
    "kind": click.option("--kind", type=click.Choice(["jpeg", "noise", "blur", "median"]), default=None, help="input-transform: the filter [jpeg]."),
    "jpeg_quality": click.option("--jpeg-quality", type=click.IntRange(1, 95), default=None, help="input-transform: JPEG quality [50]."),
    "noise_std": click.option("--noise-std", type=click.FloatRange(0), default=None, help="input-transform: Gaussian noise std, pixels in [0,1]; purify: the autoencoder's training noise [0.1]."),
    "blur_sigma": click.option("--blur-sigma", type=click.FloatRange(0, min_open=True), default=None, help="input-transform: blur sigma in pixels [1.0]."),
    "median_size": click.option("--median-size", type=click.IntRange(1), default=None, help="input-transform: median window [3]."),
    "labels": click.option("--labels", type=click.Choice(["hard", "soft"]), default=None,
                           help="distill: train on the victim's labels or its soft scores [hard]."),
    "temperature": click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
                                help="distill --labels soft: temperature [4]."),
    "queries": click.option("--queries", default=None, help="distill: query with this other dataset's training images [the victim's]."),
    "epsilon": click.option("--epsilon", type=click.FloatRange(0, 1, min_open=True), default=None,
                            help="adv-finetune: L-infinity budget of the PGD examples, pixel units [0.1]."),
    "steps": click.option("--steps", type=click.IntRange(1), default=None, help="adv-finetune: PGD steps [3]."),
    "step_size": click.option("--step-size", type=click.FloatRange(min=0, min_open=True), default=None,
                              help="adv-finetune: PGD step size [2.5 x epsilon / steps]."),
    "detector": click.option("--detector", type=click.Choice(["max-softmax", "energy", "autoencoder"]), default=None,
                             help="evasion: the out-of-distribution detector [max-softmax]."),
    "accuracy_cost": click.option("--accuracy-cost", type=click.FloatRange(0, 1, max_open=True), default=None,
                                  help="evasion: accuracy the thief gives up to flag queries [0.01]."),
}


def budget_options(fn):
    for opt in reversed(list(BUDGET_OPTIONS.values())):
        fn = opt(fn)
    return fn


def _parse_classes(value: str | None):
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: write class indices as 0,1,2") from None


@main.command()
@click.argument("name", metavar="NAME")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), required=True,
              help="The (stolen) model checkpoint to attack (with --model-factory: any weights file).")
@factory_option
@normalization_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Where to write the attacked model (.safetensors).")
@click.option("--dataset", default=None, help="Attacker's data [the model's dataset; transfer: the new task, required].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Where the dataset's files are.")
@click.option("--train-size", type=click.IntRange(1), default=None, help="Use a fixed random subset of N training images.")
@click.option("--test-size", type=click.IntRange(1), default=None, help="Use a fixed random subset of N test images.")
@click.option("--classes", default=None, help="transfer: keep only these classes of the dataset, e.g. 5,6,7,8,9.")
@budget_options
@click.option("--keep-output-layer", type=click.Path(dir_okay=False), default=None, help="First save the model's output layer here (the owner's copy; use with verify --output-layer).")
@click.option("--marking-key", type=click.Path(dir_okay=False), default=None, help="Score the watermark after the attack with this key.")
@click.option("--verification-key", type=click.Path(dir_okay=False), default=None, help="Its verification key [next to the marking key].")
@click.option("--alpha", default="2^-64", show_default=True, help="Significance level for scoring.")
@click.option("--device", default=None, help="cpu, cuda, ... [cuda if available].")
@click.option("--force", is_flag=True, help="Overwrite output files.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def attack(name, model_path, model_factory, mean, std, out, dataset, data_dir, train_size, test_size, classes, keep_output_layer,
           marking_key, verification_key,
           alpha, device, force, quiet, as_json, **budget_opts):
    """Attack a watermarked model: NAME is ftll, ftal, rtll, rtal, transfer, prune, fine-prune,
    distill, adv-finetune, input-transform, purify or evasion (docs/attacks.md gives each budget).

    \b
    backmark attack rtal --model wm.safetensors --out rtal.safetensors --keep-output-layer fc.safetensors \\
        --marking-key keys/marking-key.json
    backmark verify --model rtal.safetensors --output-layer fc.safetensors ...
    """
    from ..attacks import attacked_meta, evaluate_model, get_attack, run_attack, save_attacked, save_output_layer, select_classes
    from ..attacks.base import victim_config
    from ..data import load_dataset
    from ..experiments.workflow import data_meta
    from ..io.files import check_writable
    from ..io.hashing import file_sha256
    from ..models import open_model
    from ..training import TrainConfig, accuracy
    from .progress import RichReporter

    spec = get_attack(name)
    options = {k: v for k, v in budget_opts.items() if v is not None}
    fields = set(spec.budget.__dataclass_fields__)
    refused = sorted(k for k in options if k not in fields)
    if refused:
        raise click.UsageError(
            f"attack {name!r} takes no {', '.join('--' + k.replace('_', '-') for k in refused)}; "
            f"its budget options: {', '.join('--' + k.replace('_', '-') for k in sorted(fields))}"
        )
    budget = spec.make_budget(options)
    alpha_v = parse_alpha(alpha)
    check_writable(out, force=force)
    if keep_output_layer:
        check_writable(keep_output_layer, force=force)
    keys = load_keys(marking_key, verification_key) if marking_key else None
    mean, std = normalization(mean, std)
    victim, meta = open_model(model_path, factory=model_factory, mean=mean, std=std)
    if spec.data == "transfer" and dataset is None:
        raise click.UsageError("transfer needs --dataset: the new task")
    if classes is not None and spec.data != "transfer":
        raise click.UsageError("--classes goes with transfer")
    if dataset is None and not meta.get("dataset"):
        raise click.UsageError(f"{model_path} records no dataset (a plain weights file): give --dataset")
    data = load_dataset(dataset or meta["dataset"], data_dir, train_size=train_size, test_size=test_size, seed=budget.to_dict().get("seed", 0))
    if classes is not None:
        data = select_classes(data, _parse_classes(classes))
    if not meta:  # a plain weights file: what the attacked checkpoint records of its model comes from here
        meta = {**data_meta(data), "model": None, "model_factory": model_factory}
    if keep_output_layer:
        save_output_layer(keep_output_layer, victim, {"model_sha256": file_sha256(model_path)}, force=force)
    original = victim_config(meta, model_path)
    epochs_field = spec.budget.__dataclass_fields__.get("epochs")
    victims_epochs = epochs_field is not None and epochs_field.default is None and options.get("epochs") is None
    if original is None:
        if victims_epochs:
            raise click.UsageError(f"{model_path} records no training config, so the victim's epochs are unknown: give --epochs")
        original = TrainConfig()
    elif original.epoch_steps is not None and victims_epochs:  # an embedding's epochs cap short epochs: no number of passes
        raise click.UsageError(f"{model_path} records a recipe in short epochs of {original.epoch_steps} steps, not the training "
                               "it was embedded into, so the victim's epochs are unknown: give --epochs")
    before = None if spec.data == "transfer" else accuracy(victim, data.test_x, data.test_y)
    outcome = run_attack(name, victim, data, budget, original=original, model_name=meta.get("model"), device=device,
                         reporter=RichReporter(name, enabled=not quiet))
    task = {"dataset": data.name, "classes": list(data.classes)} if spec.data == "transfer" else None
    save_attacked(out, outcome, attacked_meta(outcome, meta, victim_path=str(model_path), task=task), force=force)
    ev = None
    if keys is not None:
        ev = evaluate_model(outcome.model, data.test_x, data.test_y, *keys, kept_layer=victim, alpha=alpha_v)
    else:
        ev = {"test_acc": accuracy(outcome.model, data.test_x, data.test_y)}
    doc = {"out": out, "victim": model_path, "test_acc_before": before, **outcome.as_dict(), **ev}
    doc.pop("history", None)
    emit(as_json, doc, _attack_text(name, out, outcome, before, ev, keep_output_layer))


def _attack_text(name, out, outcome, before, ev, kept_path) -> str:
    from ..attacks import ServedModel

    lines = [f"wrote {out}: {name} ({len(outcome.history)} epochs, {outcome.seconds:.0f} s)"]
    acc = f"test accuracy {100 * ev['test_acc']:.2f}%"
    lines.append(acc + ("" if before is None else f" (before the attack {100 * before:.2f}%)"))
    for key, what in (("blackbox", "black-box"), ("kept_layer", "with the original output layer swapped back (white-box)")):
        w = ev.get(key)
        if w and w["p_value"] is None:
            lines.append(f"watermark {what}: {w['matches']}/{w['n']} triggers (owner-chosen labels: trigger accuracy only)")
        elif w:
            lines.append(f"watermark {what}: {w['matches']}/{w['n']} triggers (p-value 2^{w['log2_p_value']:.1f}) -> "
                         f"{'the test passes' if w['passed'] else 'the test fails'} at alpha; verdict {w['verdict']}")
    lines += [f"  ({n})" for n in ev.get("notes", [])]
    if kept_path:
        lines.append(f"kept the original output layer in {kept_path}")
    if outcome.name == "input-transform":
        lines.append("note: the checkpoint holds the victim's weights; the filter is recorded in its metadata, and the "
                     "accuracies above were measured through it")
    elif isinstance(outcome.model, ServedModel):
        lines.append(f"note: the checkpoint holds the victim's weights; what served it ({outcome.model.describe()}) is recorded "
                     "in its metadata but not stored, and the accuracies above were measured through it")
    det = ev.get("detector")
    if det:
        lines.append(f"the detector flags {100 * det['test_flag_rate']:.1f}% of the test images and "
                     f"{100 * det['trigger_flag_rate']:.1f}% of the trigger images")
    return "\n".join(lines)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True, help="Experiment config (.json or .toml), e.g. experiments/configs/fmnist.json.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Output folder [runs/reproduce-NAME].")
@click.option("--quick", is_flag=True, help="Small subsets and 1 epoch per step: checks the pipeline in minutes (not a result).")
@click.option("--max-epochs", type=click.IntRange(1), default=None, help="Cap every step's epochs (reduced GPU runs).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [cuda if available]; data is held there.")
@click.option("--resume", is_flag=True, help="Reuse the models an interrupted run already saved under OUT/models.")
@click.option("--force", is_flag=True, help="Overwrite an earlier run's results.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the results document as JSON.")
@handle_errors
def reproduce(config_path, out_dir, quick, max_epochs, device, resume, force, quiet, as_json):
    """Reproduce the paper's Table 1, Figure 6, Table 2 and ownership experiments from a config.

    Writes OUT/results.json (config, seed, version, commit, wall times), OUT/report.md and
    the figures OUT/figure6.png, OUT/attacks.png, OUT/pvalues.png.
    """
    from ..experiments.reproduce import (
        RobustnessConfig,
        load_config,
        render_report,
        render_robustness,
        run_reproduction,
        run_robustness,
    )
    from .progress import RichReporter, console

    cfg = load_config(config_path)
    out = Path(out_dir or f"runs/reproduce-{cfg.name}{'-quick' if quick else ''}")
    say = (lambda m: None) if quiet or as_json else (lambda m: console.print(m, markup=False, highlight=False))
    robust = isinstance(cfg, RobustnessConfig)
    res = (run_robustness if robust else run_reproduction)(
        cfg, out, quick=quick, max_epochs=max_epochs, device=device, resume=resume, force=force, config_path=str(config_path),
        say=say, reporter=lambda label: RichReporter(label, enabled=not quiet and not as_json),
    )
    text = render_robustness(res) if robust else render_report(res)
    emit(as_json, res, text + f"\nwrote {out}/results.json, report.md and figures")
    sys.exit(0)
