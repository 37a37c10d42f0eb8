"""Evidence of time and release: release, timestamp, dispute.

Exit codes: 0 done (a dispute: one party named), 1 a check failed (a dispute: undecided),
2 a usage or input error (one line).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .app import main
from .common import emit, handle_errors, load_keys, load_owner_key

_ROOTS_HELP = "PEM file of the TSA root certificates YOU trust (never one that came with the evidence)."


def _roots(path):
    from ..crypto.timestamp import TsaRoots

    return TsaRoots.load(path) if path else None


def _stamp_text(stamp) -> str:
    from ..io.clock import format_time

    return f"anchored at {format_time(stamp.gen_time)} by TSA {stamp.tsa_subject} (certificate {stamp.tsa_fingerprint[:16]})"


def _stamp_doc(stamp) -> dict | None:
    from ..io.clock import format_time

    if stamp is None:
        return None
    return {"gen_time": format_time(stamp.gen_time), "tsa_fingerprint": stamp.tsa_fingerprint, "tsa_subject": stamp.tsa_subject,
            "serial_number": stamp.serial_number, "policy": stamp.policy}


@main.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False), required=True, help="The released weights file.")
@click.option("--marking-key", type=click.Path(dir_okay=False), required=True,
              help="The marking key whose watermark the model carries.")
@click.option("--verification-key", type=click.Path(dir_okay=False), default=None,
              help="Its verification key [next to the marking key].")
@click.option("--owner-key", type=click.Path(dir_okay=False), default=None,
              help="Owner key signing the record [owner-key.pem next to the marking key].")
@click.option("--output-layer", type=click.Path(dir_okay=False), default=None,
              help="Also bind this head (output-layer file, or a checkpoint whose output layer is taken).")
@click.option("--tsa", default=None, metavar="URL",
              help="Anchor the record with an RFC 3161 timestamp from this TSA (OUT.timestamp.json).")
@click.option("--tsa-roots", type=click.Path(dir_okay=False), default=None,
              help="Check the new anchor against these roots. " + _ROOTS_HELP)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The release record to write (JSON).")
@click.option("--force", is_flag=True, help="Overwrite --out (and its anchor).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def release(model_path, marking_key, verification_key, owner_key, output_layer, tsa, tsa_roots, out, force, as_json):
    """Sign a release record binding the verification key, the released weights (and head), and the time."""
    from ..io.files import check_writable
    from ..protocols.anchor import anchor_path, check_anchor, new_anchor, save_anchor
    from ..protocols.release import make_release, save_release

    roots = _roots(tsa_roots)
    if roots and not tsa:
        raise click.UsageError("--tsa-roots checks a new anchor: it needs --tsa")
    check_writable(out, force=force)
    if tsa:
        check_writable(anchor_path(out), force=force)
    _, vk = load_keys(marking_key, verification_key)
    doc = make_release(vk, load_owner_key(owner_key, marking_key), model_path, head=output_layer)
    anchor = new_anchor(doc, tsa=tsa) if tsa else None  # before writing: a TSA failure leaves no half-made evidence
    stamp = check_anchor(anchor, doc, roots) if anchor and roots else None
    save_release(doc, out, force=force)
    if anchor:
        save_anchor(anchor, anchor_path(out), force=force)
    b = doc["body"]
    result = {"release": out, "anchor": str(anchor_path(out)) if anchor else None, "verification_key": vk.fingerprint,
              "model": b["model"], "head": b["head"], "created": b["created"], "anchored": _stamp_doc(stamp)}
    model = b["model"]
    lines = [f"wrote {out}: release of {model['name']} (SHA-256 {model['sha256'][:16]}) under key {vk.fingerprint[:16]}"]
    if b["head"]:
        lines.append(f"binds head {b['head']['name']} (SHA-256 {b['head']['sha256'][:16]})")
    if anchor:
        said = _stamp_text(stamp) if stamp else "RFC 3161 anchor (check it with --tsa-roots)"
        lines.append(f"wrote {anchor_path(out)}: {said}")
    else:
        lines.append("not anchored: its time is only your claim (anchor it with --tsa URL or `backmark timestamp`)")
    emit(as_json, result, "\n".join(lines))


@main.command()
@click.argument("document", type=click.Path(dir_okay=False), required=False)
@click.option("--log-head", default=None, metavar="HEX",
              help="Instead of a document: an api log's head (the hash verify-extraction cuts the log at); needs --out.")
@click.option("--tsa", default=None, metavar="URL", help="Ask this TSA (HTTP) for a timestamp of the document.")
@click.option("--reply", type=click.Path(dir_okay=False), default=None,
              help="Or take a TSA's reply (.tsr) or token obtained by other means (by file).")
@click.option("--query-out", type=click.Path(dir_okay=False), default=None,
              help="Or write the timestamp query (.tsq) to carry to a TSA.")
@click.option("--tsa-roots", type=click.Path(dir_okay=False), default=None,
              help="Check the anchor (alone: check the existing one). " + _ROOTS_HELP)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The anchor file [DOCUMENT without .json + .timestamp.json].")
@click.option("--force", is_flag=True, help="Overwrite an existing anchor or query file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def timestamp(document, log_head, tsa, reply, query_out, tsa_roots, out, force, as_json):
    """Anchor a verification key, a release record or an api log's head with an RFC 3161 timestamp, or check its anchor.

    \b
    Over HTTP:  backmark timestamp verification-key.json --tsa URL
    By file:    backmark timestamp verification-key.json --query-out q.tsq
                (have a TSA answer q.tsq, e.g. openssl ts -reply ... -out r.tsr)
                backmark timestamp verification-key.json --reply r.tsr
    Check:      backmark timestamp verification-key.json --tsa-roots roots.pem      (exit 1 if it fails)
    A log head: backmark timestamp --log-head HEX --tsa URL --out head.timestamp.json   (when it is published)
    """
    from ..errors import InvalidTimestamp
    from ..io.files import atomic_write_bytes, check_writable, read_file
    from ..protocols.anchor import (
        anchor_path,
        check_anchor,
        document_digest,
        find_anchor,
        log_head_document,
        new_anchor,
        save_anchor,
        timestamp_query,
    )
    from ..protocols.release import read_anchorable

    if sum(x is not None for x in (tsa, reply, query_out)) > 1:
        raise click.UsageError("give one of --tsa, --reply and --query-out")
    if (document is None) == (log_head is None):
        raise click.UsageError("give one of: a DOCUMENT (a verification key or release record), or --log-head HEX")
    if log_head is not None and out is None and not query_out:
        raise click.UsageError("a log head has no file to keep its anchor beside: name the anchor file with --out")
    roots = _roots(tsa_roots)
    doc = read_anchorable(document) if document is not None else log_head_document(log_head)
    digest = document_digest(doc).hex()
    target = Path(out) if out else (anchor_path(document) if document is not None else None)  # a log head: --out
    document = document or f"log head {log_head}"
    if query_out:
        atomic_write_bytes(query_out, timestamp_query(doc), force=force, mode=0o644)
        emit(as_json, {"query": query_out, "digest": digest}, f"wrote {query_out}: timestamp query for SHA-256 {digest}")
        return
    if tsa is None and reply is None:
        if roots is None:
            raise click.UsageError("nothing to do: give --tsa, --reply or --query-out to anchor, or --tsa-roots to check")
        if not target.exists():
            raise click.UsageError(f"no anchor at {target}")
        try:
            stamp = find_anchor(document, doc, roots, anchor=target)
        except InvalidTimestamp as e:
            emit(as_json, {"document": document, "anchor": str(target), "ok": False, "problem": str(e)}, f"NOT ANCHORED: {e}")
            sys.exit(1)
        emit(as_json, {"document": document, "anchor": str(target), "ok": True, "anchored": _stamp_doc(stamp)},
             f"OK: {document} {_stamp_text(stamp)}")
        return
    check_writable(target, force=force)
    anchor = new_anchor(doc, tsa=tsa) if tsa else new_anchor(doc, reply=read_file(reply, what="TSA reply"))
    stamp = check_anchor(anchor, doc, roots) if roots else None  # refuse to write an anchor that fails the roots given
    save_anchor(anchor, target, force=force)
    said = _stamp_text(stamp) if stamp else f"RFC 3161 anchor of SHA-256 {digest[:16]} (check it with --tsa-roots)"
    emit(as_json, {"document": document, "anchor": str(target), "digest": digest, "anchored": _stamp_doc(stamp)},
         f"wrote {target}: {said}")


@main.command()
@click.option("--suspect", type=click.Path(dir_okay=False, exists=True), required=True, help="The disputed model file.")
@click.option("--party", "parties", type=click.Path(file_okay=False, exists=True), multiple=True, required=True,
              help="A claimant's folder (twice): keys, anchors, release records and the released models.")
@click.option("--tsa-roots", type=click.Path(dir_okay=False), default=None,
              help="Check anchors against these roots. " + _ROOTS_HELP)
@click.option("--device", default="cpu", show_default=True, help="Where to run the models.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def dispute(suspect, parties, tsa_roots, device, as_json):
    """Two parties claim one model: whose claim is better supported and why (exit 0), or that it cannot be decided (exit 1)."""
    from ..protocols.dispute import dispute as _dispute

    if len(parties) != 2:
        raise click.UsageError("give --party exactly twice")
    result = _dispute(suspect, list(parties), tsa_roots=_roots(tsa_roots), device=device)
    emit(as_json, result.as_dict(), result.summary())
    sys.exit(0 if result.decided else 1)
