"""The EZKL circuit of a model: ONNX export, settings, compilation, test-grade SRS, keys.

The circuit computes argmax(M(x / 255)) for one image x given as its pixel values 0..255
(so EZKL's fixed-point input encoding is exact), with

- input visibility ``hashed``: the Poseidon hash of the input is a public instance (the
  image's commitment; :func:`poseidon_commitment` recomputes it outside the circuit);
- output visibility ``public``: the predicted class;
- parameter visibility ``fixed``: the weights are constants of the circuit, so its
  verifying key is bound to the model.

A built circuit lives in a folder (proving key included: hundreds of MB), cached by the
model's SHA-256 under ``$BACKMARK_CACHE/zk`` unless a folder is given.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import MissingDependency, TooLargeForZK
from ...io.hashing import file_sha256
from ...models.checkpoint import weights_sha256

POSEIDON_INPUT_SCALE = 7  # EZKL input (and parameter) scale: felt = round(value * 2^7)
# Measured on this project's 2-core machine (docs/results/zk.md): proving took 19 s at 2^15 rows,
# 36 s at 2^16, 98 s at 2^17, 149 s at 2^18 per image; the largest model under 60 s was a 784-32-10
# MLP (25,450 parameters, 2^16 rows). Rows, not parameters, set the cost (a 6,810-parameter CNN
# needs 2^17): the parameter limit is a quick first check, the row limit (after calibration) decides.
ZK_MAX_PARAMS = 26_000
ZK_MAX_LOGROWS = 16
DECOMP_BASE, DECOMP_LEGS = 256, 4
CIRCUIT_FORMAT = "backmark-zk-circuit"
CIRCUIT_VERSION = 1
TEST_GRADE_SRS = "made here by ezkl.gen_srs: TEST-GRADE (whoever made it could forge proofs)"


def require_ezkl():
    """The ezkl module, or MissingDependency naming the extra to install."""
    try:
        import ezkl
    except ImportError as e:
        raise MissingDependency(f"zero-knowledge proofs need ezkl ({e}): pip install 'backmark[zk]'") from None
    return ezkl


def ezkl_version() -> str:
    from importlib.metadata import version

    return version("ezkl")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def quiet(log_path: Path):
    """Send EZKL's own output (tables, Rust logs on fds 1 and 2) to ``log_path``, not the terminal."""
    import sys

    for s in (sys.stdout, sys.stderr):
        s.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            for s in (sys.stdout, sys.stderr):
                s.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _felts(image_hwc: np.ndarray) -> list[str]:
    ezkl = require_ezkl()
    chw = np.ascontiguousarray(np.asarray(image_hwc, dtype=np.uint8).transpose(2, 0, 1)).reshape(-1)
    return [ezkl.float_to_felt(float(v), POSEIDON_INPUT_SCALE) for v in chw]


def poseidon_commitment(image_hwc: np.ndarray) -> str:
    """The Poseidon hash EZKL exposes for this uint8 (H, W, C) image as the circuit input.

    Over the pixels in (C, H, W) order, each encoded as round(pixel * 2^7) in the BN254
    scalar field; hex in EZKL's little-endian form, as in the proof's instances. It hides
    the image as far as the image is unguessable (abstract triggers from a 256-bit seed).
    """
    ezkl = require_ezkl()
    return ezkl.poseidon_hash(_felts(image_hwc))[0]


def poseidon_commitments(images: np.ndarray) -> list[str]:
    """Poseidon commitments of uint8 images (N, H, W, C)."""
    return [poseidon_commitment(im) for im in images]


class ArgmaxCircuitModel(nn.Module):
    """What the circuit computes: pixel values 0..255 (1, C, H, W) -> predicted class (1, 1)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x / 255.0).argmax(dim=1, keepdim=True)


@dataclass(frozen=True)
class Circuit:
    folder: Path
    manifest: dict

    def path(self, name: str) -> Path:
        return self.folder / name

    @property
    def logrows(self) -> int:
        return self.manifest["logrows"]


def default_folder(model_sha256: str) -> Path:
    from ...data.cache import cache_dir

    return cache_dir() / "zk" / model_sha256[:16]


def build_circuit(
    model: nn.Module,
    input_shape,
    calibration: np.ndarray,
    *,
    folder: str | os.PathLike | None = None,
    max_params: int = ZK_MAX_PARAMS,
    max_logrows: int = ZK_MAX_LOGROWS,
) -> Circuit:
    """Export, calibrate (on ``calibration``: uint8 (N, H, W, C) images), compile, make a
    test-grade SRS and the proving/verifying keys. Reused if already built in ``folder``.

    Raises TooLargeForZK when the model has more than ``max_params`` parameters or its
    circuit needs more than 2^``max_logrows`` rows.
    """
    ezkl = require_ezkl()
    model = model.to("cpu").eval()
    params = count_params(model)
    if params > max_params:
        raise TooLargeForZK(
            f"the model has {params:,} parameters: too large for ZK here (limit {max_params:,}, the largest that "
            f"proved in under 60 s per image on this machine; see docs/results/zk.md)"
        )
    sha = weights_sha256(model)
    out = Path(folder) if folder is not None else default_folder(sha)
    manifest_path = out / "circuit.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("model_sha256") == sha and all((out / f).exists() for f in ("settings.json", "model.compiled", "vk.key", "pk.key", "kzg.srs")):
            return Circuit(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    c, h, w = input_shape
    times = {}
    t = time.perf_counter()
    wrapper = ArgmaxCircuitModel(model).eval()
    example = torch.zeros(1, c, h, w)
    with torch.no_grad(), quiet(out / "ezkl.log"):
        torch.onnx.export(wrapper, (example,), str(out / "model.onnx"), input_names=["input"], output_names=["label"],
                          opset_version=13, do_constant_folding=True, dynamo=False)
    times["export"] = time.perf_counter() - t
    data = {"input_data": [np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).reshape(-1).astype(float).tolist() for im in calibration[:8]]}
    (out / "calibration.json").write_text(json.dumps(data))
    run_args = ezkl.PyRunArgs()
    run_args.input_visibility = "hashed"
    run_args.output_visibility = "public"
    run_args.param_visibility = "fixed"
    run_args.input_scale = POSEIDON_INPUT_SCALE
    run_args.param_scale = POSEIDON_INPUT_SCALE
    # Range checks by decomposition in base 2^8 with 4 legs (2^32 range, as the default 2^14 x 2 covers 2^28):
    # the default base needs a 2^14-row table, which alone forces 2^15 rows even for a tiny model.
    run_args.decomp_base = DECOMP_BASE
    run_args.decomp_legs = DECOMP_LEGS
    s, m = str(out / "settings.json"), str(out / "model.onnx")
    with quiet(out / "ezkl.log"):
        t = time.perf_counter()
        ezkl.gen_settings(m, s, py_run_args=run_args)
        ezkl.calibrate_settings(str(out / "calibration.json"), m, s, "resources", scales=[POSEIDON_INPUT_SCALE])
        times["calibrate"] = time.perf_counter() - t
    settings = json.loads(Path(s).read_text())
    logrows = settings["run_args"]["logrows"]
    if settings["run_args"]["input_scale"] != POSEIDON_INPUT_SCALE:
        raise TooLargeForZK(f"EZKL calibrated input scale {settings['run_args']['input_scale']}, not {POSEIDON_INPUT_SCALE}")
    if logrows > max_logrows:
        raise TooLargeForZK(
            f"the model's circuit needs 2^{logrows} rows ({params:,} parameters): too large for ZK here "
            f"(limit 2^{max_logrows} rows, under 60 s of proving per image on this machine; see docs/results/zk.md)"
        )
    with quiet(out / "ezkl.log"):
        t = time.perf_counter()
        ezkl.compile_circuit(m, str(out / "model.compiled"), s)
        times["compile"] = time.perf_counter() - t
        t = time.perf_counter()
        ezkl.gen_srs(str(out / "kzg.srs"), logrows)
        times["srs"] = time.perf_counter() - t
        t = time.perf_counter()
        ezkl.setup(str(out / "model.compiled"), str(out / "vk.key"), str(out / "pk.key"), str(out / "kzg.srs"))
        times["setup"] = time.perf_counter() - t
    manifest = {
        "format": CIRCUIT_FORMAT,
        "version": CIRCUIT_VERSION,
        "model_sha256": sha,
        "onnx_sha256": file_sha256(out / "model.onnx"),
        "params": params,
        "input_shape": [c, h, w],
        "logrows": logrows,
        "num_rows": settings.get("num_rows"),
        "ezkl": ezkl_version(),
        "srs": TEST_GRADE_SRS,
        "seconds": times,
        "pk_bytes": (out / "pk.key").stat().st_size,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return Circuit(out, manifest)


def copy_public_files(circuit: Circuit, dest: Path) -> dict:
    """Copy what a verifier needs (settings, verifying key, SRS) to ``dest``; their SHA-256s."""
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("settings.json", "vk.key", "kzg.srs"):
        shutil.copyfile(circuit.path(name), dest / name)
        out[name] = file_sha256(dest / name)
    return out
