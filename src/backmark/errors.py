"""Exceptions raised by backmark.

Every error a user can cause derives from :class:`BackmarkError`. The CLI turns
each into exit code 2 and one line of text; library callers catch the class they
care about. Lower-level errors (OSError, json, safetensors) are translated into
these at the boundary where backmark reads or writes a file.
"""


class BackmarkError(Exception):
    """Base class: a problem the user can fix (bad input, missing file...)."""


class InvalidFile(BackmarkError):
    """A file is missing, unreadable, of the wrong kind or of an unknown version."""


class OutputExists(BackmarkError):
    """An output file exists and overwriting it was not allowed (use --force)."""


class InvalidKey(BackmarkError):
    """A marking or verification key is malformed."""


class TamperedKey(InvalidKey):
    """A key failed a cryptographic check: bad signature, commitment or label."""


class KeyMismatch(InvalidKey):
    """A marking key does not belong to the verification key it is used with."""


class IncompatibleModel(BackmarkError):
    """The model's input shape or number of classes does not fit the key."""


class InvalidBatch(BackmarkError):
    """A training batch (or images to query) is not what the mixer or model takes: dtype, range, shape, labels."""


class DataError(BackmarkError):
    """A dataset could not be found or parsed."""


class UnknownName(BackmarkError):
    """A model, dataset, attack or target name is not registered."""


class RemoteError(BackmarkError):
    """A remote model endpoint failed, timed out, or answered something that is not a prediction."""


class QueryBudgetExceeded(RemoteError):
    """Querying a remote model would send more images than the query budget allows."""


class WeakAlpha(BackmarkError):
    """A significance level weaker than the floor (2^-64) was asked for without allowing it explicitly."""


class InvalidConfig(BackmarkError):
    """An experiment config or attack budget has an unknown option or a bad value."""


class MissingDependency(BackmarkError):
    """An optional package a feature needs is not installed (the message names the extra)."""


class SpentSet(BackmarkError):
    """A PVerify trigger set was already opened (spent), is not the one the verifier's nonce selects, or none is left."""


class TamperedRecord(BackmarkError):
    """A spent log, public claim, report or proof failed its hash-chain, signature or consistency check."""


class TooLargeForZK(BackmarkError):
    """A model is too large for zero-knowledge proving on this machine."""


class InvalidTimestamp(BackmarkError):
    """An RFC 3161 timestamp could not be obtained, is malformed, or does not verify against the verifier's TSA roots."""


class ReleaseMismatch(BackmarkError):
    """A release record is not for this verification key or owner, or a model or head is not the one it binds."""
