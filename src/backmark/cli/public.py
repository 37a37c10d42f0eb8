"""One-time and public verification: pverify, spent, public-claim, check-claim, check-report, zk-prove, zk-verify.

Exit codes as for ``verify``: 0 verified (or the record checks out), 1 not verified (or a
check failed), 2 a usage or input error.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .app import main
from .common import emit, handle_errors, load_owner_key, parse_alpha

_KEYS = [
    click.option("--marking-key", type=click.Path(dir_okay=False), required=True, help="The secret marking key."),
    click.option("--verification-key", type=click.Path(dir_okay=False), required=True, help="The public verification key."),
]


def _keys(fn):
    for opt in reversed(_KEYS):
        fn = opt(fn)
    return fn


@main.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False), required=True, help="Suspect model checkpoint.")
@_keys
@click.option("--nonce", required=True, help="The verifier's nonce (any text, chosen by the verifier): it selects the set.")
@click.option("--verifier-key", type=click.Path(dir_okay=False), required=True,
              help="The VERIFIER's Ed25519 key (PEM; created if missing): it signs each entry of the verifier's spent log.")
@click.option("--spent-log", type=click.Path(dir_okay=False), default=None, help="The verifier's hash-chained log of opened sets [spent-log.jsonl next to the verifier key].")
@click.option("--set", "set_index", type=click.IntRange(0), default=None, help="Refuse unless the nonce selects this set (as announced by the verifier).")
@click.option("--alpha", default="2^-64", show_default=True, help="False-claim probability allowed, split over the key's sets (at most 2^-64 unless --allow-weak-alpha).")
@click.option("--allow-weak-alpha", is_flag=True, help="Test at an alpha above the floor anyway: never ownership evidence.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, metavar="PATH", help="Write a signed report: PATH.json, PATH.html and PATH.pdf.")
@click.option("--owner-key", type=click.Path(dir_okay=False), default=None, help="Owner key signing the report [owner-key.pem next to the marking key].")
@click.option("--verifier-name", default=None, help="Who verifies, named in the report.")
@click.option("--device", default="cpu", show_default=True, help="Where to run the model.")
@click.option("--force", is_flag=True, help="Overwrite an existing report.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def pverify(model_path, marking_key, verification_key, nonce, verifier_key, spent_log, set_index, alpha, allow_weak_alpha, report,
            owner_key, verifier_name, device, force, as_json):
    """One-time verification: open the set the verifier's nonce selects, and record it, signed by
    the verifier, as spent in the verifier's log."""
    from ..core.keygen import MarkingKey, VerificationKey
    from ..core.verify import check_alpha
    from ..crypto import OwnerKey
    from ..io.files import check_writable
    from ..protocols.pverify import pverify as _pverify
    from ..protocols.report import report_paths, report_verification
    from ..targets import describe

    alpha = parse_alpha(alpha)
    check_alpha(alpha, allow_weak_alpha=allow_weak_alpha)
    vk = VerificationKey.load(verification_key)
    mk = MarkingKey.load(marking_key)
    verifier, _ = OwnerKey.load_or_create(verifier_key)
    log = spent_log or str(Path(verifier_key).with_name("spent-log.jsonl"))
    owner = None
    if report:
        for p in report_paths(report):
            check_writable(p, force=force)
        owner = load_owner_key(owner_key, marking_key)  # fail before a set is spent, not after
    started = time.perf_counter()
    res = _pverify(model_path, mk, vk, log, nonce=nonce.encode(), verifier_key=verifier, alpha=alpha, set_index=set_index,
                   device=device, model_info=describe(model_path), allow_weak_alpha=allow_weak_alpha)
    doc = {"model": model_path, "spent_log": log, **res.as_dict()}
    text = res.summary()
    if report:
        paths = report_verification(report, res.verification, mk, vk, owner, model=model_path, verifier_name=verifier_name,
                                    seconds=time.perf_counter() - started, selection=res.selection(), force=force)
        doc["report"] = [str(p) for p in paths]
        text += f"\nwrote {paths[0]}, {paths[1]}, {paths[2]} (the PDF is for people; check-report reads the JSON or HTML)"
    emit(as_json, doc, text)
    sys.exit(0 if res.verified else 1)


@main.command()
@click.argument("spent_log", type=click.Path(dir_okay=False))
@click.option("--verification-key", type=click.Path(dir_okay=False), default=None, help="Check the log belongs to this key.")
@click.option("--nonce", default=None, help="Also say which set this verifier nonce would select next.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def spent(spent_log, verification_key, nonce, as_json):
    """Check a spent log's hash chain and the verifier's signatures, and list the opened sets."""
    from ..core.keygen import VerificationKey
    from ..protocols.pverify import SpentLog, log_summary

    vk = VerificationKey.load(verification_key) if verification_key else None
    log = SpentLog.load(spent_log, vk)
    doc = log_summary(log)
    if nonce is not None:
        doc["next_set"] = log.next_set(nonce.encode())
    lines = [f"spent log of key {doc['verification_key'][:16]} kept by verifier {doc['verifier'][:16]}: chain and signatures "
             f"intact, head {doc['head'][:16]}",
             f"{len(doc['spent'])} of {doc['num_sets']} sets spent; unspent: {doc['unspent']}"]
    lines += [f"  #{e['seq']} set {e['set']} at {e['time']}: {e['verdict']} ({e['matches']}/{e['n']}) model {e['model']}"
              for e in doc["entries"]]
    if nonce is not None:
        lines.append(f"nonce {nonce!r} selects set {doc['next_set']} next")
    emit(as_json, doc, "\n".join(lines))


@main.command("public-claim")
@_keys
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The claim to publish (JSON).")
@click.option("--owner-key", type=click.Path(dir_okay=False), default=None, help="Owner key signing the claim [owner-key.pem next to the marking key].")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, exists=True), required=True, help="The claimed model file (its SHA-256 goes into the claim: a claim is about one model).")
@click.option("--zk-commitments", is_flag=True, help="Add Poseidon commitments of every image, for zero-knowledge proofs (needs ezkl).")
@click.option("--alpha", default="2^-64", show_default=True, help="Soundness target: false-claim probability per challenge (at most 2^-64 unless --allow-weak-alpha).")
@click.option("--allow-weak-alpha", is_flag=True, help="Claim at a target above the floor anyway: check-claim never calls it ownership evidence.")
@click.option("--grinding-bits", type=click.IntRange(0, 192), default=0, show_default=True, help="Also allow a cheater 2^B key generations to grind the Fiat-Shamir challenge.")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def public_claim(marking_key, verification_key, out, owner_key, model_path, zk_commitments, alpha, allow_weak_alpha, grinding_bits, force,
                 as_json):
    """Publish openings of the half of the key that the Fiat-Shamir challenge H(vk) selects."""
    from ..core.keygen import load_pair
    from ..io.files import check_writable
    from ..protocols.public import public_claim as _claim
    from ..protocols.public import save_claim
    from ..targets import describe

    check_writable(out, force=force)
    mk, vk = load_pair(marking_key, verification_key)
    zk = None
    if zk_commitments:
        from ..protocols.zk import poseidon_commitments

        zk = poseidon_commitments(mk.images)
    doc = _claim(mk, vk, load_owner_key(owner_key, marking_key), target=parse_alpha(alpha), grinding_bits=grinding_bits,
                 zk_commitments=zk, model_info=describe(model_path), allow_weak_alpha=allow_weak_alpha)
    save_claim(doc, out, force=force)
    p = doc["body"]["parameters"]
    emit(as_json, {"out": out, "parameters": p, "opened": doc["body"]["challenge"]["opened"]}, (
        f"wrote {out}: {p['opened']} of {p['total']} elements opened (challenge from the key's hash); {p['unopened']} stay secret\n"
        f"opened half: {p['open_threshold']} matches needed; unopened half: {p['unopened_threshold']} "
        f"(cheating owner passes with probability <= 2^{p['soundness_log2']:.1f})"
    ))


@main.command("check-claim")
@click.argument("claim", type=click.Path(dir_okay=False))
@click.option("--verification-key", type=click.Path(dir_okay=False), required=True, help="The owner's public verification key.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None, help="The model the claim names (its SHA-256 must match): query it on the opened half.")
@click.option("--zk", "zk_dirs", multiple=True, type=click.Path(file_okay=False), help="Proof folders (zk-prove) for unopened elements.")
@click.option("--device", default="cpu", show_default=True, help="Where to run the model.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def check_claim(claim, verification_key, model_path, zk_dirs, device, as_json):
    """Check a public claim: anyone can, with the verification key alone. Exit 0 valid and verified, 1 not."""
    from ..core.keygen import VerificationKey
    from ..protocols.public import check_public_claim, load_claim

    vk = VerificationKey.load(verification_key)
    chk = check_public_claim(load_claim(claim), vk, model=model_path, zk_proofs=_zk_folders(zk_dirs), device=device)
    emit(as_json, chk.as_dict(), chk.summary())
    sys.exit(0 if chk.verified else 1)


def _zk_folders(dirs) -> list[Path]:
    """Proof folders: each given folder, or its subfolders holding a manifest.json."""
    out = []
    for d in map(Path, dirs):
        out += [d] if (d / "manifest.json").exists() else sorted(p.parent for p in d.glob("*/manifest.json"))
    return out


@main.command("check-report")
@click.argument("report", type=click.Path(dir_okay=False))
@click.option("--verification-key", type=click.Path(dir_okay=False), required=True, help="The owner's verification key: every opening is checked against it.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None, help="Also check the model's SHA-256 and answers.")
@click.option("--earlier", type=click.Path(dir_okay=False), default=None, help="One-time reports: an earlier report of the same key; this one's spent log must extend its (rollback check).")
@click.option("--verifier", default=None, metavar="KEY", help="One-time reports: the verifier's public key (hex) or fingerprint that must have signed the spent log.")
@click.option("--tsa-roots", type=click.Path(dir_okay=False), default=None,
              help="White-box reports: PEM of the TSA roots YOU trust, to check the anchor of the head's release record.")
@click.option("--device", default="cpu", show_default=True, help="Where to run the model.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def check_report(report, verification_key, model_path, earlier, verifier, tsa_roots, device, as_json):
    """Check a signed verification report (its .json or .html). Exit 0 authentic, 1 not."""
    from ..core.keygen import VerificationKey
    from ..protocols.report import check_report as _check
    from .common import alpha_text

    vk = VerificationKey.load(verification_key)
    roots = None
    if tsa_roots is not None:
        from ..crypto.timestamp import TsaRoots

        roots = TsaRoots.load(tsa_roots)
    chk = _check(report, vk=vk, model=model_path, earlier=earlier, verifier=verifier, tsa_roots=roots, device=device)
    b = chk.body
    if chk.ok:
        d, v = b["decision"], b["verdict"]
        text = (f"report OK ({', '.join(chk.checked)}): {v['text']}: {d['matches']}/{d['n']} at alpha {alpha_text(b['alpha'])} "
                f"(floor {alpha_text(b['alpha_floor'])}); key {b['verification_key'][:16]}, signed by owner {b['owner'][:16]} "
                f"at {b['created']} (the owner's own clock)")
    else:
        text = "REPORT REJECTED: " + "; ".join(chk.problems)
    emit(as_json, chk.as_dict(), text)
    sys.exit(0 if chk.ok else 1)


@main.command("zk-prove")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), required=True, help="Model checkpoint (small models only).")
@_keys
@click.option("--index", "indices", type=click.IntRange(0), multiple=True, help="Element to prove (repeat).")
@click.option("--claim", type=click.Path(dir_okay=False), default=None, help="Or: prove unopened elements of this public claim...")
@click.option("--count", type=click.IntRange(1), default=1, show_default=True, help="...this many of them (the first unopened indices).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Proof folder to write (what verifiers receive).")
@click.option("--circuit-dir", type=click.Path(file_okay=False), default=None, help="Where the circuit and proving key go [$BACKMARK_CACHE/zk/MODEL].")
@click.option("--max-params", type=click.IntRange(1), default=None, help="Raise the size limit (at your own time cost).")
@click.option("--force", is_flag=True, help="Overwrite --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@handle_errors
def zk_prove(model_path, marking_key, verification_key, indices, claim, count, out, circuit_dir, max_params, force, as_json):
    """Prove in zero knowledge (EZKL) that the model maps committed trigger images to their labels."""
    from ..core.keygen import load_pair
    from ..protocols.zk import ZK_MAX_PARAMS, prove_elements

    mk, vk = load_pair(marking_key, verification_key)
    idx = list(indices)
    if claim:
        from ..protocols.public import load_claim

        opened = set(load_claim(claim)["body"]["challenge"]["opened"])
        idx += [i for i in range(vk.size) if i not in opened][:count]
    if not idx:
        raise click.UsageError("name the elements with --index I, or --claim CLAIM --count K")
    m = prove_elements(model_path, mk, vk, idx, out, circuit_folder=circuit_dir, max_params=max_params or ZK_MAX_PARAMS, force=force)
    times = [p["prove_seconds"] for p in m["proofs"]]
    text = (f"wrote {out}: {len(m['proofs'])} proofs, {len(m['skipped'])} skipped (model does not answer the label)\n"
            f"circuit 2^{m['circuit']['logrows']} rows, {m['circuit']['params']:,} parameters; "
            + (f"proving {sum(times) / len(times):.1f} s per image\n" if times else "\n")
            + f"SRS: {m['srs']}")
    emit(as_json, m, text)


@main.command("zk-verify")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--verification-key", type=click.Path(dir_okay=False), default=None, help="Check the labels against this key.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None, help="Rebuild the circuit's verifying key from this model and compare (slow).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@handle_errors
def zk_verify(folder, verification_key, model_path, as_json):
    """Verify a folder of zero-knowledge proofs. Exit 0 when every proof verifies, 1 otherwise."""
    from ..core.keygen import VerificationKey
    from ..protocols.zk import verify_proofs

    vk = VerificationKey.load(verification_key) if verification_key else None
    res = verify_proofs(folder, vk=vk, model=model_path)
    emit(as_json, res.as_dict(), res.summary())
    sys.exit(0 if res.valid and not res.rejected else 1)
