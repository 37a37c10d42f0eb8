"""Publicly verifiable claims: cut-and-choose over a key's elements, made non-interactive with Fiat-Shamir.

The owner commits to more elements than a verification needs (e.g. 4n: ``backmark keygen
--size 100 --sets 4``). A challenge computed from the hash of the verification key picks
exactly half of them; the owner publishes their openings (:func:`public_claim`), and anyone
checks them (:func:`check_public_claim`): each opens its commitment, its image is the output
of the public abstract-image generator on the revealed per-image seed, and its label is the
one derived from the key. The other half stays secret, for zero-knowledge proofs
(backmark.protocols.zk) or later verifications. With a model, the checker also queries it on the
opened half: a black-box test anyone can run.

    claim = public_claim(mk, vk, owner_key)
    check = check_public_claim(claim, vk, model="suspect.safetensors")
    check.valid, check.verified, check.problems

Soundness (docs/public-verification.md): the challenge and the thresholds that bound a cheating
owner's success live in backmark.protocols.soundness.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.keygen import MarkingKey, VerificationKey, check_pair, element_problem
from ..core.stats import ALPHA_FLOOR, DEFAULT_ALPHA, BinomialDecision, decide, log2
from ..core.triggers import GENERATOR, generator_seed, image_seed, render_abstract
from ..core.verify import Verdict, View, check_alpha, check_compatible, judge
from ..crypto import OwnerKey, canonical_json, open_signed
from ..errors import BackmarkError, InvalidConfig, InvalidFile, InvalidKey, KeyMismatch
from ..io.clock import utc_now
from ..io.documents import load_document, write_json
from ..io.png import png_b64, png_decode
from ..targets import as_target, describe
from ..version import __version__
from .claim_format import CLAIM_BODY, CLAIM_DOCUMENT, CLAIM_FORMAT, CLAIM_VERSION, PIXEL_TOLERANCE
from .soundness import ClaimParameters, challenge, claim_parameters, escape_probability, soundness_error

# -- per-image generator seeds -------------------------------------------------------------

def element_seed(mk: MarkingKey, index: int) -> bytes:
    """The seed the abstract generator drew element ``index`` of ``mk`` from (revealed for opened elements only)."""
    return image_seed(generator_seed(mk.master_seed), index)


def _generator_mismatch(image: np.ndarray, seed: bytes, input_shape) -> int:
    """How many pixels differ from the generator's output by more than the tolerance."""
    again = render_abstract(seed, input_shape).astype(np.int16)
    return int((np.abs(again - image.astype(np.int16)) > PIXEL_TOLERANCE).sum())


# -- the claim -------------------------------------------------------------------------------

def public_claim(
    mk: MarkingKey,
    vk: VerificationKey,
    owner_key: OwnerKey,
    *,
    target: float = DEFAULT_ALPHA,
    grinding_bits: int = 0,
    zk_commitments: list[str] | None = None,
    model_info: dict | None = None,
    created: str | None = None,
    check_images: bool = True,
    allow_weak_alpha: bool = False,
) -> dict:
    """The signed document an owner publishes: openings of the challenged half of the key,
    about the model ``model_info`` names ({"name", "sha256"}: a claim is about one model;
    ``check_public_claim`` refuses it for any other).

    ``zk_commitments``: Poseidon commitments of all N images (backmark.protocols.zk.poseidon_commitments),
    bound into the challenge so the opened half also checks them. ``check_images=False``
    signs openings of images that are not the generator's output: what a cheating owner
    publishes (the tests simulate one); checkers reject it when a fake is opened.
    """
    check_pair(mk, vk)
    check_alpha(target, allow_weak_alpha=allow_weak_alpha)
    if owner_key.public_hex != vk.owner_public_key:
        raise KeyMismatch("the owner key is not the one that signed this verification key")
    if not model_info or not model_info.get("sha256"):
        raise InvalidConfig("a public claim is about one model: name it (its file's SHA-256 goes into the claim)")
    if vk.label_mode != "derived":
        raise InvalidKey("public claims need derived labels: a label the owner chose cannot be shown to be arbitrary")
    if zk_commitments is not None and len(zk_commitments) != vk.size:
        raise ValueError(f"give one zero-knowledge commitment per element ({vk.size})")
    params = claim_parameters(vk.size, vk.num_classes, target=target, grinding_bits=grinding_bits)
    zk = None if zk_commitments is None else _zk_block(zk_commitments)
    opened = challenge(vk.fingerprint, vk.size, extra=_zk_extra(zk))
    elements = []
    for i in opened:
        o = mk.opening(i)
        seed = element_seed(mk, i)
        if check_images and not np.array_equal(render_abstract(seed, vk.input_shape), o["image"]):
            raise InvalidKey(
                f"trigger image {i} is not the abstract generator's output: public claims need keys made "
                f"with abstract triggers (backmark keygen --source abstract)"
            )
        elements.append({"index": i, "label": o["label"], "image_png": png_b64(o["image"]),
                         "image_seed": seed.hex(), "image_nonce": o["image_nonce"].hex()})
    body = {
        "kind": "cut-and-choose",
        "created": created or utc_now(),
        "backmark": __version__,
        "verification_key": vk.fingerprint,
        "owner_public_key": vk.owner_public_key,
        "images": {"source": "abstract", "generator": GENERATOR, "pixel_tolerance": PIXEL_TOLERANCE},
        "parameters": params.as_dict(),
        "challenge": {"opened": opened},
        "zk_commitments": zk,
        "model": model_info,
        "elements": elements,
    }
    CLAIM_BODY.validate(body, "claim body")  # what load_claim would refuse is never signed
    return {"format": CLAIM_FORMAT, "version": CLAIM_VERSION, "body": body, "signature": owner_key.sign(canonical_json(body)).hex()}


def _zk_block(values: list[str]) -> dict:
    from .zk import POSEIDON_INPUT_SCALE

    return {"scheme": "ezkl-poseidon", "input_scale": POSEIDON_INPUT_SCALE, "values": list(values)}


def _zk_extra(zk: dict | None) -> bytes:
    return b"" if zk is None else canonical_json(zk)


def save_claim(doc: dict, path: str | os.PathLike, *, force: bool = False) -> Path:
    return write_json(path, doc, force=force, mode=0o644)  # meant to be published


def load_claim(path: str | os.PathLike) -> dict:
    """A claim file, strictly (io.documents.load_document): schema and canonical form; the
    signature and everything else are checked by :func:`check_public_claim`."""
    return load_document(path, kind=CLAIM_FORMAT, versions=(CLAIM_VERSION,), schema=CLAIM_DOCUMENT)


# -- checking ---------------------------------------------------------------------------------

@dataclass
class ClaimCheck:
    parameters: ClaimParameters | None = None
    problems: list[str] = field(default_factory=list)
    invalid_elements: list[int] = field(default_factory=list)
    decision: BinomialDecision | None = None  # the model on the opened half
    verdict: Verdict | None = None  # of that test (docs/claims.md)
    zk_valid: int | None = None  # unopened elements with a valid zero-knowledge proof
    checked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """The claim is well formed and every opened element is a genuine one."""
        return not self.problems

    @property
    def verified(self) -> bool:
        """Valid, at a target no weaker than the floor, and the model (if given) passes on the opened
        half, and the proofs (if given) reach the threshold: ownership evidence (docs/claims.md)."""
        ok = self.valid and self.parameters is not None and self.parameters.target <= ALPHA_FLOOR
        if self.decision is not None:
            ok = ok and self.verdict is not None and self.verdict.claims_ownership
        if self.zk_valid is not None and self.parameters is not None:
            ok = ok and self.zk_valid >= self.parameters.unopened_threshold
        return ok

    def as_dict(self) -> dict:
        return {
            "valid": self.valid, "verified": self.verified, "problems": self.problems,
            "invalid_elements": self.invalid_elements, "checked": self.checked, "notes": self.notes,
            "parameters": None if self.parameters is None else self.parameters.as_dict(),
            "decision": None if self.decision is None else self.decision.as_dict(),
            "verdict": None if self.verdict is None else self.verdict.as_dict(),
            "zk_valid": self.zk_valid,
        }

    def summary(self) -> str:
        if not self.valid:
            return f"CLAIM INVALID: {'; '.join(self.problems[:3])}" + (" ..." if len(self.problems) > 3 else "")
        p = self.parameters
        lines = [(f"claim valid: {p.opened} of {p.total} elements opened, all genuine; the other {p.unopened} stay secret "
                  f"(a cheating owner passes with probability <= 2^{p.soundness_log2:.1f} per challenge)")]
        if self.decision is not None:
            d = self.decision
            lines.append(f"{self.verdict.text} on the opened half: {d.matches}/{d.n} labels matched (threshold {d.threshold}, "
                         f"alpha 2^{log2(p.target):.0f}); p-value 2^{d.log2_p_value:.1f}")
        if self.zk_valid is not None:
            lines.append(f"zero-knowledge: {self.zk_valid} valid proofs on the unopened half (threshold {p.unopened_threshold})")
        return "\n".join(lines)


def check_public_claim(claim: dict, vk: VerificationKey, *, model=None, zk_proofs=(), device="cpu") -> ClaimCheck:
    """Check a claim against the public verification key; problems are collected, not raised.

    Checks the owner's signature, that the opened indices are the Fiat-Shamir challenge,
    and for every opened element: its opening, that its image is the generator's output
    on its seed, its derived label and (if present) its Poseidon commitment. ``model``:
    queried on the opened half (exact binomial test). ``zk_proofs``: proof folders for
    unopened elements (backmark.protocols.zk), counted against the unopened threshold.
    """
    chk = ClaimCheck()
    try:
        CLAIM_DOCUMENT.validate(claim, "")
    except InvalidFile as e:
        chk.problems.append(f"malformed claim ({e})")
        return chk
    b, problem = open_signed(claim, what="public claim")
    if problem:
        chk.problems.append(problem)
        return chk
    try:
        _check_claim_body(b, vk, chk)
        if chk.valid and model is not None:
            _check_claim_model(b, vk, model, device, chk)
        if chk.valid and zk_proofs:
            _check_claim_zk(b, vk, zk_proofs, chk)
    except (KeyError, TypeError, ValueError) as e:
        chk.problems.append(f"malformed claim ({e})")
    return chk


def _check_claim_body(b: dict, vk: VerificationKey, chk: ClaimCheck) -> None:
    if b["verification_key"] != vk.fingerprint or b["owner_public_key"] != vk.owner_public_key:
        chk.problems.append("the claim is about another verification key or signed by another owner")
        return
    if vk.label_mode != "derived":
        chk.problems.append("public claims need a key with derived labels")
        return
    p = b["parameters"]
    params = claim_parameters(vk.size, vk.num_classes, target=float(p["target"]), grinding_bits=int(p["grinding_bits"]))
    chk.parameters = params
    if params.as_dict() != p:
        chk.problems.append("the claim's parameters do not follow from the key (recomputed here)")
    zk = b.get("zk_commitments")
    opened = challenge(vk.fingerprint, vk.size, extra=_zk_extra(zk))
    if b["challenge"]["opened"] != opened or [el["index"] for el in b["elements"]] != opened:
        chk.problems.append("the opened elements are not the ones the Fiat-Shamir challenge selects")
        return
    chk.checked.append("challenge")
    poseidon = None
    if zk is not None:
        from .zk import POSEIDON_INPUT_SCALE, poseidon_commitment

        if zk.get("scheme") != "ezkl-poseidon" or zk.get("input_scale") != POSEIDON_INPUT_SCALE or len(zk["values"]) != vk.size:
            chk.problems.append("malformed zero-knowledge commitments")
            return
        poseidon = poseidon_commitment
    for el in b["elements"]:
        i = el["index"]
        why = _element_problem(el, vk, poseidon, zk)
        if why:
            chk.invalid_elements.append(i)
            chk.problems.append(f"element {i}: {why}")
    if not chk.invalid_elements:
        chk.checked.append("openings")


def _element_problem(el: dict, vk: VerificationKey, poseidon, zk) -> str | None:
    """Why an opened element is not a genuine one (None if it is)."""
    i = el["index"]
    try:
        image = png_decode(el["image_png"], vk.input_shape)
        nonce, seed = bytes.fromhex(el["image_nonce"]), bytes.fromhex(el["image_seed"])
    except ValueError as e:
        return f"malformed opening ({e})"
    if len(seed) != 32 or len(nonce) != 32:
        return "malformed seed or nonce"
    problem = element_problem(vk, i, image, nonce, el["label"], None)
    if problem:
        return problem
    bad = _generator_mismatch(image, seed, vk.input_shape)
    if bad:
        return f"not an abstract trigger: {bad} pixels differ from the generator's output for its seed"
    if poseidon is not None and poseidon(image) != zk["values"][i]:
        return "its Poseidon commitment does not match the image"
    return None


def _check_claim_model(b: dict, vk: VerificationKey, model, device, chk: ClaimCheck) -> None:
    import torch

    named = (b.get("model") or {}).get("sha256")
    given = describe(model)["sha256"]
    if named is None:
        chk.problems.append("the claim names no model: it cannot be checked against one")
        return
    if given != named:
        chk.problems.append(f"the claim is about model {named[:16]}..., not this one ({str(given)[:16]}...)")
        return
    chk.checked.append("model named by the claim")
    target = as_target(model, device=device)
    check_compatible(target, vk)
    images = np.stack([png_decode(el["image_png"], vk.input_shape) for el in b["elements"]])
    preds = [int(p) for p in target.predict(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())]
    matches = sum(int(p == el["label"]) for p, el in zip(preds, b["elements"]))
    chk.decision = decide(matches, len(preds), chk.parameters.p0, chk.parameters.bound)
    chk.verdict = judge(null="exact", view=View(), passed=chk.decision.passed, alpha=chk.parameters.target)


def _check_claim_zk(b: dict, vk: VerificationKey, folders, chk: ClaimCheck) -> None:
    from .zk import verify_proofs

    zk = b.get("zk_commitments")
    if zk is None:
        chk.problems.append("zero-knowledge proofs need a claim with Poseidon commitments (public-claim --zk-commitments)")
        return
    opened = set(b["challenge"]["opened"])
    claimed_model = (b.get("model") or {}).get("sha256")
    counted: set[int] = set()
    for folder in folders:
        try:
            res = verify_proofs(folder, vk=vk)
        except BackmarkError as e:
            chk.notes.append(f"proofs in {folder} not counted: {e}")
            continue
        if claimed_model and res.model_sha256 != claimed_model:
            chk.notes.append(f"proofs in {folder} not counted: they are about another model than the claim names")
            continue
        for r in res.valid:
            i = r["index"]
            if i in opened or r["poseidon"] != zk["values"][i]:
                chk.notes.append(f"proof for element {i} not counted: not an unopened element with this Poseidon commitment")
            else:
                counted.add(i)
        chk.notes += [f"proof for element {r['index']} rejected: {r['reason']}" for r in res.rejected]
    chk.zk_valid = len(counted)


__all__ = [
    "CLAIM_FORMAT",
    "ClaimCheck",
    "ClaimParameters",
    "challenge",
    "check_public_claim",
    "claim_parameters",
    "escape_probability",
    "element_seed",
    "load_claim",
    "public_claim",
    "save_claim",
    "soundness_error",
]
