"""The scheme (Adi et al. 2018): KeyGen, Mark, Verify, each in the module named after it.

- :mod:`.triggers`: the trigger images (abstract images from a secret seed, or a folder);
- :mod:`.keygen`: KeyGen, the marking and verification keys, opening commitments;
- :mod:`.mark`: Mark, the trigger mixer and FROMSCRATCH / PRETRAINED embedding;
- :mod:`.stats`: the exact binomial test;
- :mod:`.verify`: Verify, querying a model and deciding.
"""
from .keygen import MarkingKey, VerificationKey, element_problem, keygen, load_pair, open_elements
from .mark import TriggerMixer, mark_from_scratch, mark_pretrained, watermark_held
from .stats import DEFAULT_ALPHA, BinomialDecision, decide
from .verify import VerificationResult, verify

__all__ = [
    "DEFAULT_ALPHA",
    "BinomialDecision",
    "MarkingKey",
    "TriggerMixer",
    "VerificationKey",
    "VerificationResult",
    "decide",
    "element_problem",
    "keygen",
    "load_pair",
    "mark_from_scratch",
    "mark_pretrained",
    "open_elements",
    "verify",
    "watermark_held",
]
