"""The core commands: keygen, train, embed, verify, demo, info, models, datasets."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .app import main
from .common import (
    check_seen_at,
    data_options,
    emit,
    factory_option,
    handle_errors,
    history_text,
    load_data,
    load_keys,
    load_owner_key,
    normalization,
    normalization_options,
    parse_alpha,
    parse_shape,
    train_config,
    train_options,
    warn_weak_watermark,
)
from .remote import open_cli_target, target_options

# -- commands ---------------------------------------------------------------------

def _say(silent: bool):
    """Where the library's one-line notes go: stderr, so --json output stays one document."""
    return (lambda m: None) if silent else (lambda m: click.echo(m, err=True))


@main.command()
@click.option("--dataset", default="fashion-mnist", show_default=True, help="Take the input shape and class count from this dataset.")
@click.option("--input-shape", default=None, help="Or give them: CxHxW, e.g. 3x32x32 (with --classes).")
@click.option("--classes", "num_classes", type=click.IntRange(2), default=None, help="Number of classes (with --input-shape).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder for marking-key.json (secret) and verification-key.json (public).")
@click.option("--size", "set_size", type=click.IntRange(1), default=100, show_default=True, help="Trigger images per set.")
@click.option("--sets", "num_sets", type=click.IntRange(1), default=1, show_default=True, help="Number of trigger sets (one-time verification opens one each time).")
@click.option("--source", default="abstract", show_default=True,
              help="'abstract' (procedural images from a secret seed), 'heldout' (images of --dataset's training split, "
                   "drawn by the secret seed; training on it leaves them out) or a folder of images.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="With --source heldout: where the dataset's files are.")
@click.option("--crop", type=click.Choice(["resize", "center"]), default="resize", show_default=True, help="For a folder: resize whole pictures, or center-crop them (official code).")
@click.option("--labels", "labels", default="derived", show_default=True, help="'derived' (from the signed key; exact null) or a labels file (paper-faithful).")
@click.option("--commitment", type=click.Choice(["sha256", "pedersen"]), default="sha256", show_default=True, help="Commitment scheme.")
@click.option("--owner-key", type=click.Path(dir_okay=False), default=None, help="Ed25519 owner key (PEM); created if missing [OUT/owner-key.pem].")
@click.option("--owner", default="", help="Owner name recorded in the signed statement.")
@click.option("--tsa", default=None, metavar="URL",
              help="Anchor the verification key with an RFC 3161 timestamp from this TSA (verification-key.timestamp.json).")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def keygen(dataset, input_shape, num_classes, out_dir, set_size, num_sets, source, crop, labels, commitment, owner_key, owner, tsa, data_dir,
           force, as_json):
    """Generate a trigger set and its keys (KeyGen)."""
    from ..core.keygen import keygen as _keygen
    from ..core.triggers import load_image_folder, load_labels_file
    from ..crypto import OwnerKey
    from ..data import dataset_info
    from ..io.files import check_writable
    from ..protocols.anchor import anchor_path, new_anchor, save_anchor

    shape = parse_shape(input_shape)
    if (shape is None) != (num_classes is None):
        raise click.UsageError("--input-shape and --classes go together")
    if shape is None:
        info = dataset_info(dataset)
        if not info.num_classes:
            raise click.UsageError(f"dataset {dataset!r} has no fixed shape; give --input-shape and --classes")
        shape, num_classes = info.input_shape, info.num_classes
        dataset_name = dataset
    else:
        dataset_name = None
    out = Path(out_dir)
    mk_path, vk_path = out / "marking-key.json", out / "verification-key.json"
    anchor_file = anchor_path(vk_path) if tsa else None
    for p in (mk_path, vk_path, anchor_file):
        if p is not None:
            check_writable(p, force=force)
    images, src, heldout = None, None, None
    total = set_size * num_sets
    if data_dir is not None and source != "heldout":
        raise click.UsageError("--data-dir goes with --source heldout")
    if source == "heldout":
        from ..data import load_dataset

        if dataset_name is None:
            raise click.UsageError("--source heldout draws from a dataset's training split: give --dataset, not --input-shape")
        if labels != "derived":
            raise click.UsageError("heldout triggers take derived labels (a given label could follow the image's true class)")
        heldout = load_dataset(dataset, data_dir).train_x
    elif source != "abstract":
        images = load_image_folder(source, shape, crop=crop)
        if len(images) != total:
            raise click.UsageError(f"{source} holds {len(images)} images; --size x --sets asks for {total}")
        src = {"kind": "folder", "path": str(source), "crop": crop}
    given = None if labels == "derived" else load_labels_file(labels, total, num_classes)
    owner_path = owner_key or str(out / "owner-key.pem")
    key, created = OwnerKey.load_or_create(owner_path)
    mk, vk = _keygen(
        input_shape=shape, num_classes=num_classes, owner_key=key, set_size=set_size, num_sets=num_sets, images=images,
        labels=given, commitment=commitment, owner=owner, dataset=dataset_name, source=src, heldout_from=heldout,
    )
    anchor = new_anchor(vk.to_document(), tsa=tsa) if tsa else None  # before writing: a TSA failure leaves no keys
    mk.save(mk_path, force=force)
    vk.save(vk_path, force=force)
    if anchor:
        save_anchor(anchor, anchor_file, force=force)
    doc = {
        "marking_key": str(mk_path), "verification_key": str(vk_path), "fingerprint": vk.fingerprint,
        "owner_key": owner_path, "owner_key_created": created, "owner": vk.owner_fingerprint,
        "elements": vk.size, "input_shape": list(shape), "num_classes": num_classes, "labels": vk.label_mode,
        "anchor": str(anchor_file) if anchor else None,
        "source": mk.source.get("kind", "abstract"),
    }
    emit(as_json, doc, (
        f"wrote {mk_path} (SECRET: keep it private until you verify)\n"
        f"wrote {vk_path} (public; fingerprint {vk.fingerprint[:16]})\n"
        f"{'created' if created else 'used'} owner key {owner_path} (fingerprint {vk.owner_fingerprint[:16]})\n"
        f"{vk.size} trigger images {shape[0]}x{shape[1]}x{shape[2]}, {num_classes} classes, labels {vk.label_mode}, {commitment} commitments"
        + (f"\nwrote {anchor_file} (RFC 3161 anchor of the verification key, from {tsa})" if anchor else "")
        + (f"\ntriggers: {vk.size} images of {dataset}'s training split (indices in the marking key); "
           "`train`/`embed` with this key leave them out of the training set" if heldout is not None else "")
    ))


@main.command()
@data_options
@click.option("--model", "model_name", default=None, help="Model name [recipe default]; `backmark models` lists them.")
@factory_option
@normalization_options
@click.option("--watermark", "marking_key", type=click.Path(dir_okay=False), default=None, help="Marking key: train FROMSCRATCH with its triggers (no key: NO-WM).")
@click.option("--verification-key", type=click.Path(dir_okay=False), default=None, help="Its verification key [next to the marking key].")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output checkpoint (.safetensors).")
@train_options
@handle_errors
def train(dataset, data_dir, train_size, test_size, model_name, model_factory, mean, std, marking_key, verification_key, out,
          as_json, quiet, **o):
    """Train a model from scratch, with a watermark (FROMSCRATCH) or without (NO-WM).

    Exit 0 when done; 1 when the watermark did not take (trigger accuracy below what
    verification needs: the checkpoint is written, a warning says what to change); 2 on error.
    """
    from ..experiments.workflow import train_file, weak_watermark_warning
    from ..training.recipes import recipe_for
    from .progress import RichReporter

    if model_factory and model_name:
        raise click.UsageError("give --model NAME or --model-factory MODULE:CALLABLE, not both")
    mean, std = normalization(mean, std)
    o.update(dataset=dataset, data_dir=data_dir, train_size=train_size, test_size=test_size)
    recipe = recipe_for(dataset)
    cfg = train_config(recipe.train, o)
    keys = load_keys(marking_key, verification_key) if marking_key else None
    data = load_data(o)
    if keys is None and cfg.hardening != "none":
        raise click.UsageError("--hardening margin hardens a watermark: give --watermark")
    _, history = train_file(
        data=data, model_name=None if model_factory else model_name or recipe.model, cfg=cfg, out=out, keys=keys,
        force=o["force"], resume=o["resume"], device=o["device"], reporter=RichReporter("train", enabled=not quiet),
        factory=model_factory, mean=mean, std=std, say=_say(quiet or as_json),
    )
    warning = weak_watermark_warning(history, keys and keys[1], cfg=cfg, mode="train", out=out)
    doc = {"out": out, "history": [h.as_dict() for h in history], "warning": warning}
    emit(as_json, doc, f"wrote {out}: {history_text(history)}")
    warn_weak_watermark(warning)


@main.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False), required=True,
              help="Trained checkpoint to watermark (with --model-factory: any weights file).")
@factory_option
@normalization_options
@data_options
@click.option("--watermark", "marking_key", type=click.Path(dir_okay=False), required=True, help="Marking key whose triggers to embed.")
@click.option("--verification-key", type=click.Path(dir_okay=False), default=None, help="Its verification key [next to the marking key].")
@click.option("--until", type=click.FloatRange(0, 1), default=1.0, show_default=True, help="Stop once trigger accuracy reaches this.")
@click.option("--hold", type=click.IntRange(0), default=0, show_default=True,
              help="Then keep fine-tuning this many epochs with the triggers (short ones of --epoch-steps where the recipe "
                   "has them: Fashion-MNIST's, 10 steps) for a mark that is harder to fine-tune away.")
@click.option("--layers", default=None, help="What fine-tunes: all, or last:N (the last N conv/linear layers) [recipe].")
@click.option("--cooldown", type=click.IntRange(0), default=None,
              help="Steps at a learning rate falling to 0 once the watermark holds [recipe].")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output checkpoint (.safetensors).")
@train_options
@handle_errors
def embed(model_path, model_factory, mean, std, dataset, data_dir, train_size, test_size, marking_key, verification_key, until,
          hold, layers, cooldown, out, as_json, quiet, **o):
    """Embed a watermark into a trained model by fine-tuning (PRETRAINED).

    Exit 0 when done; 1 when the watermark did not take (the epoch cap or --until stopped it
    below what verification needs: the checkpoint is written, a warning says what to change).
    """
    from ..experiments.workflow import embed_file, weak_watermark_warning
    from ..training.recipes import recipe_for
    from .progress import RichReporter

    mean, std = normalization(mean, std)
    o.update(dataset=dataset, data_dir=data_dir, train_size=train_size, test_size=test_size)
    cfg = train_config(recipe_for(dataset).embed, o)
    try:
        cfg = cfg.replace(layers=layers, cooldown_steps=cooldown)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    keys = load_keys(marking_key, verification_key)
    data = load_data(o)
    _, history = embed_file(
        data=data, model_path=model_path, cfg=cfg, out=out, keys=keys, until=until, hold=hold, force=o["force"],
        resume=o["resume"], device=o["device"], reporter=RichReporter("embed", enabled=not quiet),
        factory=model_factory, mean=mean, std=std, say=_say(quiet or as_json),
    )
    warning = weak_watermark_warning(history, keys[1], cfg=cfg, mode="embed", until=until, out=out)
    doc = {"out": out, "history": [h.as_dict() for h in history], "warning": warning}
    emit(as_json, doc, f"wrote {out}: {history_text(history)}")
    warn_weak_watermark(warning)


@main.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Suspect model checkpoint (or --target; with --model-factory: any weights file).")
@factory_option
@click.option("--marking-key", type=click.Path(dir_okay=False), required=True, help="The secret marking key (opened here).")
@click.option("--verification-key", type=click.Path(dir_okay=False), required=True, help="The public verification key.")
@click.option("--alpha", default="2^-64", show_default=True, help="Significance level: the false-claim probability allowed (at most 2^-64 unless --allow-weak-alpha).")
@click.option("--allow-weak-alpha", is_flag=True, help="Test at an alpha above the 2^-64 floor anyway: the outcome is never ownership evidence.")
@click.option("--reference-models", type=click.Path(file_okay=False, exists=True), default=None,
              help="For a key with owner-chosen labels: a folder of the VERIFIER's independently trained models of the task (a calibrated null).")
@click.option("--device", default="cpu", show_default=True, help="Where to run the model.")
@click.option("--output-layer", type=click.Path(dir_okay=False), default=None, help="Swap in the owner's kept output layer first (the paper's RTLL/RTAL/transfer check): a white-box view, needs --release.")
@click.option("--release", "releases", type=click.Path(dir_okay=False), multiple=True,
              help="With --output-layer: the owner's release record that binds the head (backmark release; repeatable).")
@click.option("--tsa-roots", type=click.Path(dir_okay=False), default=None,
              help="PEM of the TSA root certificates YOU trust: checks the anchors of the release record and the key.")
@click.option("--suspect-seen-at", default=None, metavar="TIME", help="With --output-layer: when you first saw the suspect (UTC, e.g. 2026-06-01T00:00:00Z).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, metavar="PATH", help="Write a report signed by the owner key (owner-key.pem next to the marking key): PATH.json, PATH.html and PATH.pdf.")
@click.option("--verifier-name", default=None, help="Who verifies, named in the report (the owner's name is the key's).")
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
@target_options
@handle_errors
def verify(model_path, model_factory, marking_key, verification_key, alpha, allow_weak_alpha, reference_models, device, output_layer,
           releases, tsa_roots, suspect_seen_at, as_json, report, verifier_name, force, **remote):
    """Verify ownership of a model. Exit 0: OWNERSHIP VERIFIED (or another verdict that is
    ownership evidence, docs/claims.md); 1: not verified, or not evidence; 2: bad input."""
    from ..core.keygen import MarkingKey, VerificationKey
    from ..core.verify import check_alpha
    from ..core.verify import verify as _verify
    from ..io.files import check_writable

    alpha = parse_alpha(alpha)
    check_alpha(alpha, allow_weak_alpha=allow_weak_alpha)
    if output_layer is not None and not releases:
        raise click.UsageError("--output-layer is a white-box view anyone can fake with a head fitted to his own key: it needs "
                               "--release RECORD, the owner's release record binding that head (backmark release)")
    if releases and output_layer is None:
        raise click.UsageError("--release binds a head: give the head with --output-layer")
    check_seen_at(suspect_seen_at)
    if report:
        from ..protocols.report import report_paths

        for p in report_paths(report):
            check_writable(p, force=force)
    vk = VerificationKey.load(verification_key)
    mk = MarkingKey.load(marking_key)
    owner = load_owner_key(None, marking_key) if report else None
    refs = _model_files(reference_models) if reference_models else None
    roots, binding = None, None
    if tsa_roots is not None:
        from ..crypto.timestamp import TsaRoots

        roots = TsaRoots.load(tsa_roots)
    if output_layer is not None:
        from ..protocols.binding import bind_head

        binding = bind_head(releases, vk, output_layer, tsa_roots=roots)  # exit 2 unless the owner's record binds it
    key_anchor = _key_anchor(verification_key, vk, roots)
    target, mean, std = open_cli_target(model_path, vk=vk, device=device, model_factory=model_factory, **remote)
    started = time.perf_counter()
    result = _verify(target, mk, vk, alpha=alpha, device=device, allow_weak_alpha=allow_weak_alpha, reference_models=refs,
                     output_layer=output_layer, head=binding, suspect_seen_at=suspect_seen_at, mean=mean, std=std)
    doc = {"model": model_path or remote["target"], **result.as_dict(), "key_anchor": key_anchor}
    text = f"{result.summary()}\nkey {vk.fingerprint[:16]}, owner {vk.owner_fingerprint[:16]}; {key_anchor['text']}"
    if report:
        from ..protocols.anchor import load_anchor
        from ..protocols.report import report_verification

        stated = {"anchor": load_anchor(key_anchor["anchor"]), "anchored_at": key_anchor["anchored_at"]} \
            if key_anchor["anchored_at"] else None  # only a time checked against the verifier's roots
        paths = report_verification(report, result, mk, vk, owner, model=model_path or remote["target"],
                                    seconds=time.perf_counter() - started, force=force, verifier_name=verifier_name,
                                    key_anchor=stated)
        doc["report"] = [str(p) for p in paths]
        text += f"\nwrote {paths[0]}, {paths[1]}, {paths[2]} (the PDF is for people; check-report reads the JSON or HTML)"
    if not result.passed and mean is None and _may_expect_normalised(target):
        text += "\nhint: if this model expects normalised inputs, pass --mean/--std"
    emit(as_json, doc, text)
    sys.exit(0 if result.verified else 1)


def _key_anchor(vk_path, vk, roots) -> dict:
    """The verification key's RFC 3161 anchor (keygen --tsa), checked against the verifier's roots when given."""
    from ..io.clock import format_time
    from ..protocols.anchor import anchor_path, find_anchor

    path = anchor_path(vk_path)
    if not path.exists():
        return {"anchored_at": None, "text": "key not anchored (keygen --tsa)"}
    if roots is None:
        return {"anchored_at": None, "anchor": str(path), "text": f"key anchor {path.name} not checked (give --tsa-roots)"}
    stamp = find_anchor(vk_path, vk.to_document(), roots)  # a present anchor that fails: exit 2, never ignored
    when = format_time(stamp.gen_time)
    return {"anchored_at": when, "anchor": str(path), "tsa": stamp.tsa_fingerprint,
            "text": f"key anchored at {when} (TSA {stamp.tsa_fingerprint[:16]})"}


def _may_expect_normalised(target) -> bool:
    """A user's module (built by --model-factory) that does not start with a backmark Normalize."""
    from ..models import AdaptedModel
    from ..models.adapt import starts_with_normalize

    return isinstance(target, AdaptedModel) and not starts_with_normalize(target)


def _model_files(folder: str) -> list[str]:
    """The model files in a folder (checkpoints, ONNX, TorchScript), in name order."""
    found = sorted(str(p) for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in (".safetensors", ".onnx", ".pt", ".pth"))
    if not found:
        raise click.UsageError(f"{folder} holds no model files (.safetensors, .onnx, .pt)")
    return found


@main.command()
@click.option("--out-dir", type=click.Path(file_okay=False), default="backmark-demo", show_default=True, help="Where keys and models go.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Fashion-MNIST folder [/usr/share/datasets/fashion-mnist].")
@click.option("--train-size", type=click.IntRange(1), default=None, help="Train on a subset (quicker, less accurate).")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Epochs per model [3].")
@click.option("--force", is_flag=True, help="Overwrite an earlier demo's files.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def demo(out_dir, data_dir, train_size, epochs, force, quiet, as_json):
    """KeyGen -> train with watermark -> verify (accepted) -> verify a model without it (rejected), on Fashion-MNIST."""
    from ..experiments.demo import run_demo
    from .progress import RichReporter, console

    summary = run_demo(out_dir, data_dir=data_dir, train_size=train_size, epochs=epochs, force=force,
                       say=(lambda m: None) if quiet or as_json else console.print,
                       reporter=lambda label: RichReporter(label, enabled=not quiet))
    emit(as_json, summary, summary["text"])
    sys.exit(0 if summary["ok"] else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models(as_json):
    """List the registered models (a model of your own: --model-factory MODULE:CALLABLE)."""
    from ..models import list_models, registered_models

    specs = registered_models()
    doc = {"models": [{"name": m.name, "description": m.description, "input_shape": list(m.input_shape),
                       "num_classes": m.num_classes} for m in specs]}
    emit(as_json, doc, "\n".join(f"{name:16s} {desc}" for name, desc in list_models().items()))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def datasets(as_json):
    """List the datasets backmark can load, with their default folders."""
    from ..data import DATASETS, resolve_data_dir

    rows, lines = [], []
    for name, info in DATASETS.items():
        found = resolve_data_dir(name)
        where = str(found) if found is not None else ("(no files)" if name == "mnist-5k" else "(needs --data-dir or $BACKMARK_DATA)")
        rows.append({"name": name, "description": info.description, "folder": None if found is None else str(found)})
        lines.append(f"{name:14s} {info.description}  [{where}]")
    emit(as_json, {"datasets": rows}, "\n".join(lines))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@handle_errors
def info(path, as_json):
    """Describe and check any file backmark writes or reads: keys, checkpoints, state dicts,
    exports, reports, claims, spent and audit logs, owner keys (fingerprint only). Exit 2 if
    the file fails its check or is of no known kind."""
    from ..experiments.describe import describe_file

    doc = describe_file(path)
    emit(as_json, doc, _info_text(doc))


def _info_text(doc: dict) -> str:
    lines = [f"{doc['file']}: {doc['kind']}" + (f" (checked: {', '.join(doc['checked'])})" if doc.get("checked") else "")]
    for k, v in doc.items():
        if k in ("file", "kind", "checked"):
            continue
        text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
        lines.append(f"  {k}: {text if len(text) <= 200 else text[:197] + '...'}")
    return "\n".join(lines)
