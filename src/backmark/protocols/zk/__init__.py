"""Zero-knowledge proofs that a model maps a committed trigger image to its label (EZKL).

For a small model, :func:`prove_elements` proves with EZKL (PyPI ``ezkl``, Halo2 + KZG)
that argmax(M(t)) = label for trigger images t that stay secret: the proof's public
instances are the Poseidon hash of the image (its commitment) and the predicted class; the
model's weights are fixed in the circuit, so the circuit's verifying key names the model.
:func:`verify_proofs` checks such a proof folder; anyone can run it.

    proofs = prove_elements("model.safetensors", mk, vk, [3, 17], "proofs/")
    result = verify_proofs("proofs/", vk=vk)       # result.valid: [{index, label, poseidon}, ...]

Limits, measured on this project's 2-core machine (docs/results/zk.md): proving time grows
with the circuit's rows; models above :data:`ZK_MAX_PARAMS` parameters or circuits above
2^:data:`ZK_MAX_LOGROWS` rows are refused with TooLargeForZK ("too large for ZK here").
Trust: the structured reference string (SRS) is made here by ``ezkl.gen_srs``: TEST-GRADE.
Whoever generated it could forge proofs; a real deployment uses a public ceremony's SRS.
"""
from __future__ import annotations

from .circuit import (
    POSEIDON_INPUT_SCALE,
    ZK_MAX_LOGROWS,
    ZK_MAX_PARAMS,
    Circuit,
    build_circuit,
    count_params,
    poseidon_commitment,
    poseidon_commitments,
    require_ezkl,
)
from .proof import PROOFS_FORMAT, ZKVerification, prove_elements, verify_proofs

__all__ = [
    "POSEIDON_INPUT_SCALE",
    "PROOFS_FORMAT",
    "ZK_MAX_LOGROWS",
    "ZK_MAX_PARAMS",
    "Circuit",
    "ZKVerification",
    "build_circuit",
    "count_params",
    "poseidon_commitment",
    "poseidon_commitments",
    "prove_elements",
    "require_ezkl",
    "verify_proofs",
]
