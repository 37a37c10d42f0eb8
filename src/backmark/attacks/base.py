"""What every attack shares: the budget base class, the context, the outcome, the registry."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..data import Dataset
from ..errors import InvalidConfig, InvalidFile, UnknownName
from ..training import SCHEDULES, EpochStats, Reporter, TrainConfig


@dataclass(frozen=True)
class Budget:
    """Base of every attack's budget: a frozen dataclass; unknown options are refused."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Budget:
        d = dict(d or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise InvalidConfig(f"unknown budget option(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(known)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise InvalidConfig(f"{cls.__name__}: {e}") from None


@dataclass(frozen=True)
class CleanTraining(Budget):
    """How an attack trains on clean data (no epochs: see TrainingBudget). None means "as the victim"."""

    lr: float = 0.01  # the official fine-tune.py examples: 0.01 (a tenth of the training lr)
    schedule: str = "constant"
    batch_size: int | None = None  # None: the victim's
    data_fraction: float = 1.0  # share of the victim's training set the attacker holds (labels included)
    augment: bool | None = None  # None: as the victim was trained
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.data_fraction <= 1:
            raise ValueError(f"data_fraction must lie in (0, 1], got {self.data_fraction}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be positive")

    def train_config(self, original: TrainConfig, *, epochs: int) -> TrainConfig:
        """The attacker's TrainConfig: the victim's recipe with this budget's choices (no triggers), in whole
        passes, every layer and BatchNorm training as usual (a PRETRAINED victim records its embedding's recipe:
        short epochs, a cool-down, some layers; none of them is the attacker's)."""
        cfg = original.replace(
            epochs=epochs, lr=self.lr, schedule=self.schedule, batch_size=self.batch_size, augment=self.augment, seed=self.seed,
        )
        return dataclasses.replace(cfg, trigger_k=0, epoch_steps=None, cooldown_steps=0, layers="all", bn_stats="batch",
                                   hardening="none")


@dataclass(frozen=True)
class TrainingBudget(CleanTraining):
    """A training attack's budget; epochs None = the victim's own training epochs (the paper's default)."""

    epochs: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.epochs is not None and self.epochs < 1:
            raise ValueError("epochs must be >= 1")

    def resolved_epochs(self, original: TrainConfig) -> int:
        return self.epochs if self.epochs is not None else original.epochs


@dataclass(frozen=True)
class AttackContext:
    """What an attack knows besides its budget: the victim's recipe and where to run."""

    original: TrainConfig = field(default_factory=TrainConfig)  # how the victim was trained (epochs, batch size, augmentation)
    model_name: str | None = None  # the victim's registered architecture, if known
    device: object = None
    reporter: Reporter | None = None


class ServedModel(nn.Module):
    """The victim's weights behind something the thief adds when serving it (an input filter, a
    purifier, a query detector): no weight changes. ``model`` is the victim; ``describe()`` says
    what sits in front of it. Saved as the victim's weights with ``served_as`` in the metadata;
    the wrapper itself is rebuilt, not stored."""

    model: nn.Module

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class AttackOutcome:
    name: str
    budget: Budget
    model: nn.Module  # the attacked model (for input-transform: the victim behind the transform)
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0
    notes: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "attack": self.name,
            "budget": self.budget.to_dict(),
            "seconds": self.seconds,
            "epochs": len(self.history),
            "history": [h.as_dict() for h in self.history],
            **self.notes,
        }


AttackFn = Callable[[nn.Module, Dataset, Budget, AttackContext], tuple[nn.Module, list[EpochStats], dict]]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    budget: type[Budget]
    fn: AttackFn
    description: str
    data: str  # what the attacker's data is: "victim" (its training set) or "transfer" (another task)
    paper_keeps_output_layer: bool  # the paper measures it with the original output layer swapped back

    def make_budget(self, options: dict | None = None) -> Budget:
        return self.budget.from_dict(options)


_REGISTRY: dict[str, AttackSpec] = {}


def register_attack(name: str, budget: type[Budget], description: str, *, data: str = "victim", paper_keeps_output_layer: bool = False):
    """Decorator: make ``fn(model, data, budget, ctx) -> (model, history, notes)`` an attack named ``name``."""

    def wrap(fn: AttackFn) -> AttackFn:
        _REGISTRY[name] = AttackSpec(name, budget, fn, description, data, paper_keeps_output_layer)
        return fn

    return wrap


def get_attack(name: str) -> AttackSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownName(f"unknown attack {name!r}; known attacks: {', '.join(_REGISTRY)}") from None


def list_attacks() -> dict[str, str]:
    """Attack names and one-line descriptions, in registration order."""
    return {name: spec.description for name, spec in _REGISTRY.items()}


def run_attack(
    name: str,
    model: nn.Module,
    data: Dataset,
    budget: Budget | dict | None = None,
    *,
    original: TrainConfig | None = None,
    model_name: str | None = None,
    device=None,
    reporter: Reporter | None = None,
) -> AttackOutcome:
    """Attack ``model`` (left untouched; the outcome holds a new one).

    ``data`` is the attacker's dataset: the victim's task for every attack but
    ``transfer``, which takes the new task. ``original`` is the victim's TrainConfig
    (from its checkpoint), the default for epochs, batch size and augmentation.
    """
    spec = get_attack(name)
    if not isinstance(budget, Budget):
        budget = spec.make_budget(budget)
    elif not isinstance(budget, spec.budget):
        raise InvalidConfig(f"attack {name!r} takes a {spec.budget.__name__}, not a {type(budget).__name__}")
    ctx = AttackContext(original=original or TrainConfig(), model_name=model_name, device=device, reporter=reporter)
    started = time.perf_counter()
    attacked, history, notes = spec.fn(model, data, budget, ctx)
    return AttackOutcome(name, budget, attacked, history, time.perf_counter() - started, notes)


def attacker_data(data: Dataset, fraction: float, seed: int) -> Dataset:
    """The share of ``data``'s training split the attacker holds (test split kept whole)."""
    if fraction >= 1:
        return data
    n = max(1, round(fraction * len(data.train_y)))
    idx = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return replace(data, train_x=data.train_x[idx.to(data.train_x.device)], train_y=data.train_y[idx.to(data.train_y.device)])


def victim_config(meta: dict, source: str) -> TrainConfig | None:
    """The victim's training recipe from its checkpoint metadata (the attacks' defaults).

    A PRETRAINED victim's is the recipe of the training it was embedded into (``pretrained_from``),
    where recorded: "the victim's epochs" are those of its training, not the embedding's cap.
    None when the checkpoint records none; InvalidFile when what it records is not a training
    config (never silently replaced by defaults). A recipe in short epochs (``epoch_steps``)
    counts no passes: the caller asks for the attack's epochs.
    """
    original = meta.get("pretrained_from")
    recorded = meta.get("config")
    if isinstance(original, dict) and original.get("config") is not None:
        recorded = original["config"]
    if recorded is None:
        return None
    try:
        return TrainConfig.from_dict(recorded)
    except (TypeError, ValueError, AttributeError) as e:
        raise InvalidFile(f"{source}: the checkpoint's training config is unreadable ({e})") from None
