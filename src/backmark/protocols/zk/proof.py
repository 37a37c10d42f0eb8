"""Prove and verify, per trigger element, that the model answers the element's label.

A proof folder holds what a verifier needs and nothing secret::

    manifest.json      backmark-zk-proofs: key, model, circuit, one record per proof
    settings.json      the EZKL circuit settings
    vk.key             the circuit's verifying key (bound to the model's weights)
    kzg.srs            the structured reference string (TEST-GRADE, made here)
    element-<i>.proof.json   EZKL proofs; public instances: Poseidon(image), predicted class

The image itself is never written: the proof shows that SOME image with that Poseidon
commitment is mapped to the label. The public claim (backmark.protocols.public) links the Poseidon
commitments to the key's commitments by cut-and-choose.
"""
from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...core.keygen import MarkingKey, VerificationKey, open_elements
from ...errors import InvalidFile, InvalidKey, TamperedRecord
from ...io.clock import utc_now
from ...io.documents import read_json_document, write_json
from ...io.files import check_writable
from ...io.hashing import file_sha256
from ...version import __version__
from .circuit import (
    POSEIDON_INPUT_SCALE,
    TEST_GRADE_SRS,
    ZK_MAX_LOGROWS,
    ZK_MAX_PARAMS,
    ArgmaxCircuitModel,
    build_circuit,
    copy_public_files,
    quiet,
    require_ezkl,
)

PROOFS_FORMAT = "backmark-zk-proofs"
PROOFS_VERSION = 1


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _load_module(model):
    from torch import nn

    from ...targets import describe

    info = describe(model)
    if isinstance(model, nn.Module):
        return model, info
    from ...models.checkpoint import load_model

    module, _ = load_model(model)
    return module, info


def prove_elements(
    model,
    mk: MarkingKey,
    vk: VerificationKey,
    indices: Sequence[int],
    out: str | os.PathLike,
    *,
    circuit_folder: str | os.PathLike | None = None,
    max_params: int = ZK_MAX_PARAMS,
    max_logrows: int = ZK_MAX_LOGROWS,
    force: bool = False,
) -> dict:
    """Prove argmax(model(t_i)) = label_i for each element ``i`` in ``indices``; write the folder ``out``.

    ``model``: nn.Module or checkpoint path. Elements whose circuit answer is not their
    label are listed under "skipped" (no proof is possible for them). Returns the manifest.
    """
    ezkl = require_ezkl()
    if vk.label_mode != "derived":
        raise InvalidKey("zero-knowledge proofs need a key with derived labels (the label is public through the key)")
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("no elements to prove")
    labels = open_elements(mk, vk, idx)
    out = Path(out)
    check_writable(out / "manifest.json", force=force)
    module, info = _load_module(model)
    circuit = build_circuit(module, vk.input_shape, mk.images[idx], folder=circuit_folder, max_params=max_params, max_logrows=max_logrows)
    files = copy_public_files(circuit, out)
    proofs, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="backmark-zk-") as tmp:
        for i, y in zip(idx, labels):
            image = mk.images[i]
            data = {"input_data": [image.transpose(2, 0, 1).reshape(-1).astype(float).tolist()]}
            inp, wit = Path(tmp) / "input.json", Path(tmp) / "witness.json"
            inp.write_text(json.dumps(data))
            proof_path = out / f"element-{i}.proof.json"
            with quiet(circuit.path("ezkl.log")):
                t = time.perf_counter()
                witness = ezkl.gen_witness(str(inp), str(circuit.path("model.compiled")), str(wit))
                t_witness = time.perf_counter() - t
                answer = int(ezkl.felt_to_int(witness["outputs"][0][0]))
                if answer != y:
                    skipped.append({"index": i, "label": y, "circuit_answer": answer})
                    continue
                t = time.perf_counter()
                ezkl.prove(str(wit), str(circuit.path("model.compiled")), str(circuit.path("pk.key")), str(proof_path), str(circuit.path("kzg.srs")))
                t_prove = time.perf_counter() - t
            proof = json.loads(proof_path.read_text())
            proofs.append({
                "index": i, "label": y, "poseidon": proof["instances"][0][0], "file": proof_path.name,
                "sha256": file_sha256(proof_path), "bytes": proof_path.stat().st_size,
                "witness_seconds": t_witness, "prove_seconds": t_prove, "peak_rss_mb": _peak_rss_mb(),
            })
    manifest = {
        "format": PROOFS_FORMAT,
        "version": PROOFS_VERSION,
        "created": utc_now(),
        "backmark": __version__,
        "verification_key": vk.fingerprint,
        "model": info,
        "circuit": {k: v for k, v in circuit.manifest.items() if k not in ("format", "version")},
        "statement": "argmax(M(t / 255)) = label, for t with Poseidon(t) = poseidon (pixels as round(p * 2^7), CHW order)",
        "input_scale": POSEIDON_INPUT_SCALE,
        "srs": TEST_GRADE_SRS,
        "files": files,
        "proofs": proofs,
        "skipped": skipped,
    }
    write_json(out / "manifest.json", manifest, force=True)
    return manifest


@dataclass
class ZKVerification:
    manifest: dict
    valid: list[dict] = field(default_factory=list)  # {index, label, poseidon, verify_seconds}
    rejected: list[dict] = field(default_factory=list)  # {index, reason}
    model_checked: bool = False

    @property
    def model_sha256(self) -> str | None:
        return self.manifest.get("model", {}).get("sha256")

    def as_dict(self) -> dict:
        return {"verification_key": self.manifest.get("verification_key"), "model": self.manifest.get("model"),
                "srs": self.manifest.get("srs"), "valid": self.valid, "rejected": self.rejected,
                "model_checked": self.model_checked}

    def summary(self) -> str:
        lines = [f"{len(self.valid)} proofs valid, {len(self.rejected)} rejected (SRS: {self.manifest.get('srs')})"]
        lines += [f"  element {r['index']}: {r['reason']}" for r in self.rejected]
        lines.append("verifying key rebuilt from the model: it matches" if self.model_checked else
                     "the verifying key was not rebuilt from a model (give --model to bind the proofs to it)")
        return "\n".join(lines)


def verify_proofs(folder: str | os.PathLike, *, vk: VerificationKey | None = None, model=None) -> ZKVerification:
    """Check every proof in a proof folder.

    Each proof must verify under the folder's verifying key and SRS, with public instances
    equal to the recorded Poseidon commitment and label; with ``vk``, the label must be the
    one the key derives for that element. With ``model``, the verifying key is rebuilt
    from the model (same settings and SRS) and must be identical, which binds the proofs to
    that model. Raises TamperedRecord when the folder's shared files were altered.
    """
    ezkl = require_ezkl()
    folder = Path(folder)
    manifest = read_json_document(folder / "manifest.json", kind=PROOFS_FORMAT, versions=(PROOFS_VERSION,))
    try:
        for name, digest in manifest["files"].items():
            if name not in ("settings.json", "vk.key", "kzg.srs"):
                raise TamperedRecord(f"{folder}: unexpected file {name!r} in the manifest")
            if not (folder / name).is_file() or file_sha256(folder / name) != digest:
                raise TamperedRecord(f"{folder}/{name} is missing or differs from the manifest")
        if vk is not None and manifest["verification_key"] != vk.fingerprint:
            raise TamperedRecord(f"{folder}: the proofs are about another verification key")
        result = ZKVerification(manifest)
        for rec in manifest["proofs"]:
            reason, seconds = _proof_problem(ezkl, folder, rec, vk)
            if reason:
                result.rejected.append({"index": rec.get("index"), "reason": reason})
            else:
                result.valid.append({"index": rec["index"], "label": rec["label"], "poseidon": rec["poseidon"],
                                     "verify_seconds": seconds})
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidFile(f"{folder}/manifest.json: malformed ({e})") from None
    if model is not None:
        _check_model_binding(ezkl, folder, model)
        result.model_checked = True
    return result


def _proof_problem(ezkl, folder: Path, rec: dict, vk: VerificationKey | None) -> tuple[str | None, float]:
    """(why the proof is rejected or None, seconds ezkl.verify took)."""
    name = rec["file"]
    path = folder / name
    if "/" in name or not path.is_file():
        return "proof file missing", 0.0
    if file_sha256(path) != rec["sha256"]:
        return "proof file differs from the manifest", 0.0
    try:
        inst = json.loads(path.read_text()).get("instances")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return "proof file is not an EZKL proof", 0.0
    if not (isinstance(inst, list) and len(inst) == 1 and len(inst[0]) == 2):
        return "unexpected public instances", 0.0
    if inst[0][0] != rec["poseidon"]:
        return "the proof's Poseidon commitment differs from the recorded one", 0.0
    shown = int(ezkl.felt_to_int(inst[0][1]))
    if shown != rec["label"]:
        return f"the proof shows class {shown}, not label {rec['label']}", 0.0
    if vk is not None:
        i = rec["index"]
        if not (isinstance(i, int) and 0 <= i < vk.size) or vk.derived_labels[i] != rec["label"]:
            return "the label is not the one the key derives for this element", 0.0
    t = time.perf_counter()
    try:
        with quiet(Path(os.devnull)):
            ok = ezkl.verify(str(path), str(folder / "settings.json"), str(folder / "vk.key"), str(folder / "kzg.srs"))
    except Exception as e:  # ezkl raises RuntimeError/ValueError for malformed proofs  # noqa: BLE001
        return f"the proof does not verify ({str(e).splitlines()[0][:120]})", 0.0
    return (None if ok else "the proof does not verify"), time.perf_counter() - t


def _check_model_binding(ezkl, folder: Path, model) -> None:
    """Rebuild the verifying key from ``model`` with the folder's settings and SRS; compare."""
    import torch

    module, _ = _load_module(model)
    manifest = json.loads((folder / "manifest.json").read_text())
    c, h, w = manifest["circuit"]["input_shape"]
    with tempfile.TemporaryDirectory(prefix="backmark-zk-check-") as tmp:
        t = Path(tmp)
        with torch.no_grad(), quiet(t / "ezkl.log"):
            torch.onnx.export(ArgmaxCircuitModel(module.to("cpu").eval()).eval(), (torch.zeros(1, c, h, w),), str(t / "model.onnx"),
                              input_names=["input"], output_names=["label"], opset_version=13, do_constant_folding=True, dynamo=False)
            ezkl.compile_circuit(str(t / "model.onnx"), str(t / "model.compiled"), str(folder / "settings.json"))
            ezkl.setup(str(t / "model.compiled"), str(t / "vk.key"), str(t / "pk.key"), str(folder / "kzg.srs"))
        if (t / "vk.key").read_bytes() != (folder / "vk.key").read_bytes():
            raise TamperedRecord(f"{folder}: the proofs' verifying key is not the circuit of this model")


__all__ = ["PROOFS_FORMAT", "ZKVerification", "prove_elements", "verify_proofs"]
