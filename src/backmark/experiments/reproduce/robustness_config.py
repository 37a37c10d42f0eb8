"""The robustness table's config: typed frozen dataclasses; unknown keys, sources, attacks and
budgets are refused (see robustness.py for what a run does).

    cfg = load_config("experiments/configs/robustness-fmnist.json")   # "kind": "robustness"
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ...attacks import get_attack
from ...core.stats import DEFAULT_ALPHA
from ...errors import InvalidConfig
from ...training.recipes import recipe_for
from .config import _build, train_config

KIND = "robustness"
SOURCES = ("abstract", "heldout")
RESULTS_FORMAT = "backmark-robustness-results"
RESULTS_VERSION = 1


@dataclass(frozen=True)
class SchemeConfig:
    name: str
    source: str = "abstract"  # "abstract" (procedural images) or "heldout" (images of the training split)
    train: dict = field(default_factory=dict)  # TrainConfig options over the run's: hardening, margin_*, trigger_k
    seeds: tuple[int, ...] | None = None  # the seeds it is trained on [all the run's]: fewer where CPU time is short

    def on(self, seed: int) -> bool:
        return self.seeds is None or seed in self.seeds


@dataclass(frozen=True)
class RobustAttack:
    attack: str  # a registered attack name
    label: str | None = None
    budget: dict = field(default_factory=dict)
    schemes: tuple[str, ...] | None = None  # the schemes attacked [all]
    seeds: tuple[int, ...] | None = None  # the seeds it runs on [all the run's]: fewer for the costly, less telling ones

    @property
    def name(self) -> str:
        return self.label or self.attack


@dataclass(frozen=True)
class RobustQuick:
    """What ``--quick`` changes: small subsets, one epoch, the first ``seeds`` seeds."""

    train_size: int = 2000
    test_size: int = 500
    max_epochs: int = 1
    seeds: int = 1
    trigger_k: int | None = None


@dataclass(frozen=True)
class RobustnessConfig:
    name: str
    dataset: str
    kind: str = KIND
    description: str = ""
    data_dir: str | None = None
    model: str | None = None  # [the dataset's recipe]
    train_size: int | None = None
    test_size: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    key_size: int = 100
    train: dict = field(default_factory=dict)  # TrainConfig options over the recipe's, for every model
    alpha: float = DEFAULT_ALPHA
    schemes: tuple[SchemeConfig, ...] = ()
    attacks: tuple[RobustAttack, ...] = ()
    quick: RobustQuick = RobustQuick()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_robustness(doc: dict, *, where: str = "config") -> RobustnessConfig:
    """A validated RobustnessConfig: unknown keys, sources, attacks, budgets and training options are refused."""
    doc = dict(doc)
    nested = {"quick": lambda v, w: _build(RobustQuick, v, w)}
    lists = {"schemes": SchemeConfig, "attacks": RobustAttack}
    kw = {}
    for k, v in doc.items():
        if k in nested:
            v = nested[k](v, f"{where}.{k}")
        elif k in lists:
            if not isinstance(v, list):
                raise InvalidConfig(f"{where}.{k}: expected a list")
            v = tuple(_build(lists[k], _tuples(item), f"{where}.{k}[{i}]") for i, item in enumerate(v))
        elif k == "seeds" and isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    cfg = _build(RobustnessConfig, kw, where)
    if cfg.kind != KIND:
        raise InvalidConfig(f"{where}.kind must be {KIND!r}")
    base = train_config(recipe_for(cfg.dataset).train, cfg.train, f"{where}.train")
    names = [s.name for s in cfg.schemes]
    if not names or len(set(names)) != len(names):
        raise InvalidConfig(f"{where}.schemes: give at least one scheme, with distinct names")
    for i, s in enumerate(cfg.schemes):
        if s.source not in SOURCES:
            raise InvalidConfig(f"{where}.schemes[{i}].source must be one of {', '.join(SOURCES)}, not {s.source!r}")
        train_config(base, s.train, f"{where}.schemes[{i}].train")
        if s.seeds is not None and (not s.seeds or not set(s.seeds) <= set(cfg.seeds)):
            raise InvalidConfig(f"{where}.schemes[{i}].seeds must be some of the run's seeds {list(cfg.seeds)}")
    labels = [a.name for a in cfg.attacks]
    if len(set(labels)) != len(labels):
        raise InvalidConfig(f"{where}: attack labels must be unique, got {labels}")
    for i, a in enumerate(cfg.attacks):
        spec = get_attack(a.attack)
        if spec.data != "victim":
            raise InvalidConfig(f"{where}.attacks[{i}]: {a.attack!r} needs another task; the robustness table takes attacks on the victim's")
        spec.make_budget(a.budget)
        unknown = sorted(set(a.schemes or ()) - set(names))
        if unknown:
            raise InvalidConfig(f"{where}.attacks[{i}].schemes: unknown scheme(s) {', '.join(unknown)}")
        if a.seeds is not None and (not a.seeds or not set(a.seeds) <= set(cfg.seeds)):
            raise InvalidConfig(f"{where}.attacks[{i}].seeds must be some of the run's seeds {list(cfg.seeds)}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds) or cfg.key_size < 1 or not 0 < cfg.alpha < 1:
        raise InvalidConfig(f"{where}: seeds must be distinct and present, key_size positive, alpha in (0, 1)")
    return cfg


def _tuples(item):
    if isinstance(item, dict):
        return {k: tuple(v) if k in ("schemes", "seeds") and isinstance(v, list) else v for k, v in item.items()}
    return item
