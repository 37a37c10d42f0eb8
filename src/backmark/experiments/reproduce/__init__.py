"""Reproduce the paper's experiments from a config: Table 1, Figure 6, Table 2, ownership.

    backmark reproduce --config experiments/configs/fmnist.json --out runs/fmnist
    backmark reproduce --config experiments/configs/fmnist.json --quick     # minutes, for tests

Steps (each model is saved under OUT/models/, so ``--resume`` skips what is done):

1. KeyGen (abstract or the paper's images), then NO-WM, FROMSCRATCH and PRETRAINED
   (Table 1: test accuracy, trigger accuracy, p-value);
2. every configured attack on the marked models (Figure 6 and beyond), each scored the
   paper's way (original output layer kept where the paper does) and black-box;
3. transfer learning (Table 2), to another dataset or to the other half of the classes;
4. non-trivial ownership (clean models vs the key, fresh keys vs the marked models) and
   ownership piracy.

A config with ``"kind": "robustness"`` runs the robustness table instead (schemes x attacks x
seeds; :mod:`.robustness`).

OUT/results.json records the resolved config, seed, package version, git commit, device
and wall times (rewritten after every step); OUT/report.md, OUT/figure6.png,
OUT/attacks.png and OUT/pvalues.png are made from it.
"""
from .config import (
    AttackConfig,
    KeyConfig,
    OwnershipConfig,
    QuickConfig,
    ReproduceConfig,
    TransferConfig,
    expand_path,
    parse_config,
    train_config,
)
from .load import load_config
from .render import render_report, write_outputs
from .robustness import run_robustness
from .robustness_config import RobustnessConfig, parse_robustness
from .robustness_render import render_robustness
from .run import RESULTS_FORMAT, RESULTS_VERSION, git_commit, run_reproduction

__all__ = [
    "RESULTS_FORMAT",
    "RESULTS_VERSION",
    "AttackConfig",
    "KeyConfig",
    "OwnershipConfig",
    "QuickConfig",
    "ReproduceConfig",
    "RobustnessConfig",
    "TransferConfig",
    "expand_path",
    "git_commit",
    "load_config",
    "parse_config",
    "parse_robustness",
    "render_report",
    "render_robustness",
    "run_reproduction",
    "run_robustness",
    "train_config",
    "write_outputs",
]
