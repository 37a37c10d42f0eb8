"""What each verdict of a report shows and does not show, and the report's limitations, in plain
words: docs/claims.md read for one signed body. A change to the claim model is a change here.

    shows(body), does_not_show(body), limitations(body)
"""
from __future__ import annotations

import math

from ..core.stats import ALPHA_FLOOR
from .report_chart import superscript


def odds(log10_p: float) -> str:
    """A probability in words: "about 1 in 10^30" (superscript), "about 1 in 2,300", "about 45%"."""
    p = 10**log10_p
    if p >= 0.5:
        return f"about {100 * p:.0f}%"
    if p >= 1e-6:
        inv = 1 / p
        mag = 10 ** max(0, math.floor(math.log10(inv)) - 1)  # two significant digits
        return f"about 1 in {round(inv / mag) * mag:,}"
    return f"about 1 in 10{superscript(round(-log10_p))}"


def alpha_words(alpha: float) -> str:
    """2^-64 (superscript) for a power of two below 1e-4, else three significant digits."""
    exp = math.log2(alpha)
    return f"2{superscript(exp)}" if alpha < 1e-4 and exp == round(exp) else f"{alpha:.3g}"


FLOOR = alpha_words(ALPHA_FLOOR)

_NOT_WHO = ("Who trained, copied or deployed the model, when, or how it was obtained; nor who owns it in law. The report "
            "links the model to this key; the key is linked to its owner by the owner's signature.")
_NOT_OTHERS = "Anything about other models, files or versions: only the model identified in this report was tested."


def shows(b: dict) -> str:
    """What the verdict proves, in one paragraph."""
    kind, v, view = b["verdict"]["kind"], b["verdict"], b["view"]
    if kind == "ownership":
        sel = b["selection"]
        bar = alpha_words(sel["alpha_total"] if sel["kind"] == "pverify" else b["alpha"])
        return ("This model was trained with this key's secret trigger set, or on the answers of a model that was, "
                f"unless an event of probability at most {bar} happened (matching this many labels by chance).")
    if kind == "calibrated":
        return (f"The model gives the owner's chosen labels far more often than the verifier's "
                f"{len(b['null'].get('references') or ())} reference models of the task, trained independently of the "
                "owner, do. Under the assumption below (a model not trained with the key matches them no more often than "
                "those reference models do on average), the model was not trained independently of the key. That "
                "assumption fails when the claimant chose the labels after querying this model (its own mistakes, "
                "labelled with its answers, are rare among the reference models), so this is not ownership evidence.")
    if kind == "white-box" and v["claims_ownership"]:
        return (f"With the owner's kept output layer swapped in (a head the owner's release record binds, anchored at "
                f"{view.get('anchored_at')}), the model reproduces the key's labels; the head's trusted time precedes the "
                f"time the verifier first saw this model ({view.get('suspect_seen_at')}), so the head was not fitted to it.")
    if kind == "white-box":
        return ("With a swapped-in output layer the model matches the key's labels, but this is not evidence: "
                f"{v['text']}. A head has enough parameters to be fitted to any labels in seconds.")
    if kind == "not-verified":
        return "Nothing about ownership: the test did not reject chance."
    if kind == "owner-chosen-labels":
        return "Trigger accuracy only: how often the model gives the labels the owner chose for the trigger images."
    if kind == "weak-alpha":
        return (f"That the test passes at alpha {alpha_words(b['alpha'])}, a level the claimant chose above the {FLOOR} floor "
                "(--allow-weak-alpha).")
    raise ValueError(f"unknown verdict kind {kind!r}")


def does_not_show(b: dict) -> list[str]:
    """What the verdict does not prove (most important first)."""
    kind, v = b["verdict"]["kind"], b["verdict"]
    if kind == "ownership":
        return [_NOT_WHO, _NOT_OTHERS]
    if kind == "calibrated":
        return ["Anything beyond the assumption: a model more alike the owner's than any reference model, for reasons other "
                "than the watermark, is not covered. Several architectures and training recipes make the assumption safer.",
                _NOT_WHO]
    if kind == "white-box" and v["claims_ownership"]:
        return ["That the model as deployed reproduces the labels: its own output layer was replaced before querying.",
                _NOT_WHO]
    if kind == "white-box":
        return ["Ownership: a head fitted after the model appeared would match as well.", _NOT_WHO]
    if kind == "not-verified":
        return ["That the model is unrelated to the owner's: the watermark may be absent, removed (retraining or distilling "
                "a model removes this scheme's watermark), or too weak for the bar."]
    if kind == "owner-chosen-labels":
        return ["Ownership: labels the owner chose can agree with the task (natural images with their true classes match "
                "any good classifier) or be copied from a stolen model's answers, so there is no exact chance to test "
                "against. The verifier's own reference models (--reference-models) would give a calibrated null."]
    if kind == "weak-alpha":
        return ["Ownership: keys are free to mint, so a claimant can try many keys until one passes a weak test; the "
                f"{FLOOR} floor is the margin against that, and this test was run above it."]
    raise ValueError(f"unknown verdict kind {kind!r}")


def limitations(b: dict) -> list[str]:
    """What anyone relying on the report should know, whatever the verdict."""
    q = (b.get("query") or {}).get("queries") or {}
    out = []
    if q.get("url"):
        head = q.get("audit_head")
        out.append("The model was queried over the network. A service can answer other clients, or at other times, "
                   "differently; the model behind it is not identified by a hash. "
                   + (f"The audit log (head {head}) records every request and answer." if head else
                      "No audit log was kept for these queries."))
    elif b["model"].get("sha256"):
        out.append("The result concerns the model identified by the SHA-256 above, as it was when tested.")
    else:
        out.append("The model is not identified by a hash: nothing in this report ties the result to a particular file.")
    out.append("A watermark can be removed: retraining or distilling a model on another model's answers (model extraction) "
               "removes this scheme's watermark at no loss of accuracy (Lukas et al., IEEE S&P 2022). A model that is not "
               "verified may still be derived from the owner's.")
    if b["selection"]["kind"] == "pverify":
        out.append("This verification opened one of the key's trigger sets: its images and labels are now known to anyone "
                   "with this report, and the set is spent; later verifications must use another set.")
    else:
        out.append("This verification opened the whole trigger set: its images and labels are now known to anyone with "
                   "this report, and a model could be retrained to forget them. One-time verification (backmark pverify) "
                   "keeps other sets for later.")
    out.append("The report's time is the owner's machine clock, signed by the owner: it is not a trusted timestamp. Only "
               "RFC 3161 anchors are evidence of time.")
    out.append("The owner's signature shows the report was made with the owner's key and not changed since; it does not "
               "make its content true. backmark check-report recomputes the count, the p-value and the verdict, checks that "
               "every image and label opens its commitment in the verification key and, given the model, repeats its "
               "answers.")
    if b["null"]["kind"] == "calibrated":
        out.append("The chance figures hold only for models like the verifier's reference models: they rest on the "
                   "assumption stated above, not on an exact null.")
    if b["view"]["kind"] != "black-box":
        out.append(f"White-box view: the answers come from the model with the owner's head (SHA-256 "
                   f"{b['view'].get('head_sha256')}) swapped in, not from the model as deployed.")
    return out


__all__ = ["FLOOR", "alpha_words", "does_not_show", "limitations", "odds", "shows"]
