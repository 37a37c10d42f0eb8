"""The watermark at the API: api-keygen, verify-extraction (``serve --api-mark`` lives with serve).

Exit codes as for ``verify``: 0 evidence (EXTRACTION VERIFIED: the log cut at a head whose RFC 3161
anchor precedes --suspect-seen-at), 1 not verified or not evidence, 2 a usage or input error.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .app import main
from .common import check_seen_at, emit, factory_option, handle_errors, parse_alpha
from .remote import open_cli_target, target_options


@main.command("api-keygen")
@click.option("--classes", "num_classes", type=click.IntRange(2), required=True, help="Classes of the served model.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The api-mark file to write (SECRET, 0600).")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=0.005, show_default=True,
              help="Share of queries answered with a derived label.")
@click.option("--owner-key", type=click.Path(dir_okay=False), default=None,
              help="Ed25519 owner key (PEM) that signs it; created if missing [owner-key.pem beside --out].")
@click.option("--owner", default="", help="Owner name recorded in the signed body.")
@click.option("--force", is_flag=True, help="Overwrite an existing api-mark file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def api_keygen(num_classes, out, fraction, owner_key, owner, force, as_json):
    """Make an api-mark secret for `serve --api-mark` (a watermark at the API, after DAWN)."""
    from ..crypto import OwnerKey
    from ..io.files import check_writable
    from ..protocols.apimark import ApiMark

    check_writable(out, force=force)
    owner_path = owner_key or str(Path(out).with_name("owner-key.pem"))
    key, created = OwnerKey.load_or_create(owner_path)
    mark = ApiMark.generate(num_classes=num_classes, owner_key=key, fraction=fraction, owner=owner)
    mark.save(out, force=force)
    doc = {"api_mark": out, "fingerprint": mark.fingerprint, "owner_key": owner_path, "owner_key_created": created,
           "owner": mark.owner_fingerprint, "num_classes": num_classes, "fraction": fraction}
    emit(as_json, doc, (
        f"wrote {out} (SECRET: the server needs it; keep it private)\n"
        f"{'created' if created else 'used'} owner key {owner_path} (fingerprint {mark.owner_fingerprint[:16]})\n"
        f"api-mark {mark.fingerprint[:16]}: {fraction:g} of queries answered with a derived label, {num_classes} classes"
    ))


@main.command("verify-extraction")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None, help="Suspect checkpoint (or --target).")
@factory_option
@click.option("--api-mark", "api_mark", type=click.Path(dir_okay=False), required=True, help="The api-mark the API served with.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), required=True, help="The API's signed log of marked answers.")
@click.option("--images", "images_path", type=click.Path(dir_okay=False), default=None,
              help="The logged query images [LOG with .images before its suffix].")
@click.option("--head", default=None, metavar="HEX",
              help="A log head the owner published before the suspect was known: only the entries up to it are tested. "
                   "Evidence needs its anchor too (--head-anchor): the owner could have logged after seeing the suspect.")
@click.option("--head-anchor", type=click.Path(dir_okay=False), default=None,
              help="The head's RFC 3161 anchor (backmark timestamp --log-head HEX ...); needs --tsa-roots.")
@click.option("--tsa-roots", type=click.Path(dir_okay=False), default=None,
              help="PEM of the TSA root certificates YOU trust (never one that came with the evidence): checks --head-anchor.")
@click.option("--suspect-seen-at", default=None, metavar="TIME",
              help="When you first saw the suspect (UTC, e.g. 2026-06-01T00:00:00Z): the head must be anchored before it.")
@click.option("--alpha", default="2^-64", show_default=True,
              help="Significance level: the false-claim probability allowed (at most 2^-64 unless --allow-weak-alpha).")
@click.option("--allow-weak-alpha", is_flag=True,
              help="Test at an alpha above the 2^-64 floor anyway: the outcome is never evidence.")
@click.option("--device", default="cpu", show_default=True, help="Where to run the model.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@target_options
@handle_errors
def verify_extraction(model_path, model_factory, api_mark, log_path, images_path, head, head_anchor, tsa_roots, suspect_seen_at,
                      alpha, allow_weak_alpha, device, as_json, **remote):
    """Was a model trained on the API's answers? Replay the logged queries: exit 0 evidence, 1 not, 2 error."""
    from ..core.verify import check_alpha
    from ..crypto.timestamp import TsaRoots
    from ..protocols.anchor import load_anchor
    from ..protocols.apilog import default_images_path
    from ..protocols.apimark import ApiMark
    from ..protocols.extraction import verify_extraction as _verify_extraction

    alpha = parse_alpha(alpha)
    check_alpha(alpha, allow_weak_alpha=allow_weak_alpha)
    if head is not None and (len(head) != 64 or any(c not in "0123456789abcdef" for c in head)):
        raise click.BadParameter("a log head is 64 lowercase hex digits", param_hint="--head")
    if head_anchor is not None and (head is None or tsa_roots is None or suspect_seen_at is None):
        raise click.UsageError("--head-anchor is checked against --head, --tsa-roots and --suspect-seen-at: give all three")
    if tsa_roots is not None and head_anchor is None:
        raise click.UsageError("--tsa-roots checks --head-anchor: give the head's anchor")
    check_seen_at(suspect_seen_at)
    anchor = load_anchor(head_anchor) if head_anchor is not None else None
    roots = TsaRoots.load(tsa_roots) if tsa_roots is not None else None
    mark = ApiMark.load(api_mark)
    images_path = images_path or str(default_images_path(log_path))
    target, mean, std = open_cli_target(model_path, vk=mark, device=device, model_factory=model_factory,
                                        **remote)  # vk: only its num_classes is read
    result = _verify_extraction(target, mark, log_path, images_path, alpha=alpha, allow_weak_alpha=allow_weak_alpha, head=head,
                                head_anchor=anchor, tsa_roots=roots, suspect_seen_at=suspect_seen_at, device=device,
                                mean=mean, std=std)
    log = result.log
    emit(as_json, {"model": model_path or remote["target"], "images": images_path, **result.as_dict()}, (
        f"{result.summary()}\n"
        f"api-mark {mark.fingerprint[:16]}, owner {mark.owner_fingerprint[:16]}; log head {log['head'][:16]}, "
        f"{log['entries']} entries ({log['distinct_queries']} distinct queries) from {log['first']} to {log['last']}"
    ))
    sys.exit(0 if result.verified else 1)
