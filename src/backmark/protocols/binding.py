"""White-box heads as evidence: the binding a release record gives a head, and its check in a report.

    binding = bind_head(["release.json"], vk, "fc.safetensors", tsa_roots=roots)   # core.verify.HeadBinding
    result = verify(model, mk, vk, output_layer="fc.safetensors", head=binding, suspect_seen_at=S)
    problem = check_binding(report_body["view"], vk, tsa_roots=roots)               # None, or one line

Anyone can fit a head to his own key on a stolen backbone, so a head counts only when a release
record of the key's owner binds it (its SHA-256, ``models.heads.head_sha256``), and as ownership
evidence only when that record's RFC 3161 anchor, checked against the VERIFIER's TSA roots,
precedes the time the verifier first saw the suspect (core.verify.judge; docs/claims.md,
"Heads"). A report carries the record and its anchor (``view.release``), so a third party
re-checks all of it with the key and the same roots.
"""
from __future__ import annotations

import os
from typing import Sequence

from ..core.keygen import VerificationKey
from ..core.verify import HeadBinding
from ..crypto.timestamp import TsaRoots
from ..errors import BackmarkError, InvalidFile, ReleaseMismatch
from ..io.clock import format_time
from ..models.heads import head_sha256
from .anchor import anchor_path, check_anchor_time, load_anchor
from .release import check_release_document, load_release


def bind_head(records: Sequence[str | os.PathLike], vk: VerificationKey, head, *,
              tsa_roots: TsaRoots | None = None) -> HeadBinding:
    """The binding of ``head`` (a head file, checkpoint, state dict or module) by the first-anchored
    of ``records`` (release record files) that binds it. Every record must be ``vk``'s owner's
    and every anchor present must verify (given roots): a broken one is an error, never skipped.
    ReleaseMismatch if none binds this head."""
    if not records:
        raise ReleaseMismatch("a white-box head needs the owner's release record that binds it (--release)")
    loaded = [load_release(p, vk, tsa_roots=tsa_roots) for p in records]
    name = head_sha256(head)
    binding = [r for r in loaded if r.head_sha256 == name]
    if not binding:
        bound = ", ".join(f"{r.head_sha256[:16]}..." for r in loaded if r.head_sha256) or "no head"
        raise ReleaseMismatch(f"no release record given binds this head ({name[:16]}...); they bind {bound}")
    first = min(binding, key=lambda r: (r.anchored_at is None, r.anchored_at))
    anchor = load_anchor(anchor_path(first.path)) if first.anchor is not None else None
    return HeadBinding(name, None if first.anchored_at is None else format_time(first.anchored_at),
                       {"record": first.document, "anchor": anchor})


def check_binding(view: dict, vk: VerificationKey, *, tsa_roots: TsaRoots | None) -> str | None:
    """None if a report's white-box ``view`` is what its embedded release record and anchor show:
    the owner's signed record of ``vk`` binding ``view.head_sha256``, and ``view.anchored_at`` the
    anchor's genTime verified against ``tsa_roots`` (or null with no anchor). Else one line."""
    release = view.get("release")
    if not isinstance(release, dict) or set(release) != {"record", "anchor"}:
        return "the white-box report does not carry the release record that binds its head"
    try:
        record = check_release_document(release["record"], vk, where="the report's release record")
        if record["body"]["head"] is None or record["body"]["head"]["sha256"] != view["head_sha256"]:
            return "the report's release record does not bind the head the report names"
        anchor = release["anchor"]
        if anchor is None:
            return None if view["anchored_at"] is None else "the report states an anchored time but carries no anchor"
        if tsa_roots is None:
            return "the report's head is anchored: give the TSA roots you trust (--tsa-roots) to check the anchor"
        check_anchor_time({"anchor": anchor, "anchored_at": view["anchored_at"]}, record, tsa_roots)
    except InvalidFile as e:
        return f"malformed release record or anchor in the report: {e}"
    except BackmarkError as e:
        return f"the head's anchor: {e}"
    return None


__all__ = ["bind_head", "check_binding"]
