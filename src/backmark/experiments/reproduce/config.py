"""The reproduction config: typed frozen dataclasses; unknown keys are refused at every level.

    cfg = load_config("experiments/configs/fmnist.json")     # or .toml (load.py; a robustness config too)
    cfg = parse_config({"name": "x", "dataset": "fashion-mnist", "attacks": [{"attack": "rtal"}]})
"""
from __future__ import annotations

import dataclasses
import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path

from ...attacks import get_attack
from ...core.stats import DEFAULT_ALPHA
from ...errors import InvalidConfig
from ...training import TrainConfig
from ...training.recipes import recipe_for

VICTIMS = ("FROMSCRATCH", "PRETRAINED")


@dataclass(frozen=True)
class KeyConfig:
    source: str = "abstract"  # or a folder of images; ${VAR} expands from the environment, e.g. ${BACKMARK_DATA}/adi2018-trigger-set/pics
    crop: str = "resize"  # for a folder: "resize" or "center" (the official code's CenterCrop)
    labels: str = "derived"  # or a labels file (paper-faithful committed labels)
    size: int = 100


@dataclass(frozen=True)
class AttackConfig:
    attack: str  # a registered attack name
    label: str | None = None  # name in tables and plots [attack]
    budget: dict = field(default_factory=dict)  # the attack's budget options (docs/attacks.md)
    victims: tuple[str, ...] = VICTIMS

    @property
    def name(self) -> str:
        return self.label or self.attack


@dataclass(frozen=True)
class TransferConfig:
    label: str
    dataset: str  # the new task
    data_dir: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    classes: tuple[int, ...] | None = None  # keep only these classes of the new task (relabelled)
    source_classes: tuple[int, ...] | None = None  # train a separate FROMSCRATCH source on these classes of the main dataset
    budget: dict = field(default_factory=dict)  # TransferBudget options
    victims: tuple[str, ...] = VICTIMS  # with source_classes: the separate source model only


@dataclass(frozen=True)
class OwnershipConfig:
    clean_models: int = 10  # independently trained models without the watermark (seeds differ)
    clean_epochs: int | None = 1  # their budget (None: the full training recipe)
    fresh_keys: int = 100
    piracy: bool = True


@dataclass(frozen=True)
class QuickConfig:
    """What ``--quick`` changes: small subsets, few epochs, few clean models."""

    train_size: int = 3000
    test_size: int = 1000
    max_epochs: int = 1
    clean_models: int = 2
    fresh_keys: int = 100
    transfer_train_size: int = 1000
    trigger_k: int | None = None  # more triggers per batch, so one short epoch can embed them


@dataclass(frozen=True)
class ReproduceConfig:
    name: str
    dataset: str
    description: str = ""
    data_dir: str | None = None
    model: str | None = None  # [the dataset's recipe]
    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    train: dict = field(default_factory=dict)  # TrainConfig options over the recipe's (NO-WM, FROMSCRATCH, clean models)
    embed: dict = field(default_factory=dict)  # TrainConfig options over the recipe's PRETRAINED embedding
    embed_until: float = 1.0
    alpha: float = DEFAULT_ALPHA
    key: KeyConfig = KeyConfig()
    attacks: tuple[AttackConfig, ...] = ()
    transfer: tuple[TransferConfig, ...] = ()
    ownership: OwnershipConfig | None = OwnershipConfig()
    quick: QuickConfig = QuickConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_NESTED = {"key": KeyConfig, "ownership": OwnershipConfig, "quick": QuickConfig}
_LISTS = {"attacks": AttackConfig, "transfer": TransferConfig}
_TUPLES = ("victims", "classes", "source_classes")


def _build(cls, d, where: str):
    if not isinstance(d, dict):
        raise InvalidConfig(f"{where}: expected a table of options, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise InvalidConfig(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kw = {}
    for k, v in d.items():
        if cls is ReproduceConfig and k in _NESTED:
            v = None if v is None else _build(_NESTED[k], v, f"{where}.{k}")
        elif cls is ReproduceConfig and k in _LISTS:
            if not isinstance(v, list):
                raise InvalidConfig(f"{where}.{k}: expected a list")
            v = tuple(_build(_LISTS[k], item, f"{where}.{k}[{i}]") for i, item in enumerate(v))
        elif k in _TUPLES and v is not None:
            v = tuple(v)
        kw[k] = v
    try:
        return cls(**kw)
    except TypeError as e:
        raise InvalidConfig(f"{where}: {e}") from None


def parse_config(doc: dict, *, where: str = "config") -> ReproduceConfig:
    """A validated ReproduceConfig: unknown keys, attacks, budgets and training options are refused."""
    cfg = _build(ReproduceConfig, doc, where)
    recipe = recipe_for(cfg.dataset)
    for part, base in (("train", recipe.train), ("embed", recipe.embed)):
        train_config(base, getattr(cfg, part), f"{where}.{part}")
    names = [a.name for a in cfg.attacks] + [t.label for t in cfg.transfer]
    if len(set(names)) != len(names):
        raise InvalidConfig(f"{where}: attack and transfer labels must be unique, got {names}")
    for i, a in enumerate(cfg.attacks):
        spec = get_attack(a.attack)
        if spec.data != "victim":
            raise InvalidConfig(f"{where}.attacks[{i}]: {a.attack!r} goes under 'transfer'")
        spec.make_budget(a.budget)
        _check_victims(a.victims, f"{where}.attacks[{i}]")
    for i, t in enumerate(cfg.transfer):
        get_attack("transfer").make_budget(t.budget)
        _check_victims(t.victims, f"{where}.transfer[{i}]")
    if not 0 < cfg.alpha < 1:
        raise InvalidConfig(f"{where}.alpha must lie in (0, 1)")
    return cfg


def _check_victims(victims, where):
    bad = [v for v in victims if v not in VICTIMS]
    if bad or not victims:
        raise InvalidConfig(f"{where}.victims: choose from {', '.join(VICTIMS)}, got {list(victims)}")


def train_config(base: TrainConfig, options: dict, where: str) -> TrainConfig:
    """``base`` with ``options`` (TrainConfig fields) over it; InvalidConfig names ``where`` on a bad one."""
    try:
        return TrainConfig.from_dict({**base.to_dict(), **options}) if options else base
    except (TypeError, ValueError) as e:
        raise InvalidConfig(f"{where}: {e}") from None


def read_document(path: str | os.PathLike) -> tuple[dict, str]:
    """A .json or .toml config file's document and the name errors give it (``load.load_config`` parses it)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise InvalidConfig(f"{p}: cannot read the config ({e.strerror})") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            doc = tomllib.loads(raw.decode())
        else:
            doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidConfig(f"{p}: not a valid {p.suffix.lstrip('.') or 'json'} config ({e})") from None
    return doc, p.name


def expand_path(value: str | None) -> str | None:
    """``${VAR}`` from the environment (an unset variable is an error, never a guess)."""
    if value is None:
        return None
    try:
        return string.Template(value).substitute(os.environ)
    except (KeyError, ValueError) as e:
        raise InvalidConfig(f"cannot expand {value!r}: set the environment variable {e}") from None
