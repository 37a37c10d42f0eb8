"""Removal attacks, by name, each with an explicit budget (docs/attacks.md).

    outcome = run_attack("rtal", model, data, {"epochs": 3}, original=TrainConfig(epochs=3))
    row = evaluate_model(outcome.model, data.test_x, data.test_y, mk, vk, kept_layer=model)

| name | what the attacker does |
|---|---|
| ftll, ftal, rtll, rtal | the paper's fine-tuning attacks (last / all layers, last layer re-initialised or not) |
| transfer | new output layer for another task, fine-tuned on it (paper's Table 2) |
| prune | magnitude weight pruning, optional fine-tuning |
| fine-prune | prune the last conv layer's dormant channels, then fine-tune (Liu et al. 2018) |
| distill | train a fresh model on the victim's labels or soft scores (extraction, distillation), on its data or another set |
| adv-finetune | fine-tune all layers on PGD examples of the attacker's data with true labels (WRK-style removal) |
| input-transform | serve the model behind JPEG / noise / blur / median filtering |
| purify | serve the model behind a denoising autoencoder trained on the attacker's images |
| evasion | answer the queries an out-of-distribution detector flags at random |
"""
from __future__ import annotations

from pathlib import Path

from ..models.checkpoint import save_model
from ..models.heads import load_output_layer, save_output_layer, with_output_layer
from ..training.distributed import is_main_process
from . import distill, fineprune, finetune, prune, transfer, transform  # noqa: F401  (registers the attacks)

# isort: split
from . import adversarial, evasion, purify  # noqa: F401  (registered after the paper's attacks: the listing order)
from .adversarial import AdversarialBudget
from .base import (
    AttackContext,
    AttackOutcome,
    AttackSpec,
    Budget,
    CleanTraining,
    ServedModel,
    TrainingBudget,
    attacker_data,
    get_attack,
    list_attacks,
    register_attack,
    run_attack,
)
from .distill import DistillBudget
from .evaluate import evaluate_model, watermark_row
from .evasion import DetectorWrapped, EvasionBudget
from .fineprune import FinePruneBudget
from .finetune import FineTuneBudget
from .prune import PruneBudget
from .purify import PurifiedModel, PurifyBudget
from .transfer import TransferBudget, select_classes
from .transform import TransformBudget, TransformedModel


def attacked_meta(outcome: AttackOutcome, victim_meta: dict, *, victim_path: str | None = None, task: dict | None = None) -> dict:
    """Checkpoint metadata for an attacked model: the victim's, updated, with an "attack" record."""
    meta = {k: v for k, v in victim_meta.items() if k not in ("format", "version", "backmark", "history", "wall_seconds")}
    if task:
        meta.update(task)
    model = outcome.model.model if isinstance(outcome.model, ServedModel) else outcome.model
    if getattr(model, "num_classes", None) is not None:
        meta["num_classes"] = model.num_classes
    if outcome.name == "distill":
        meta["model"] = outcome.notes["student"]
        meta["watermark"] = None  # a fresh model: nothing was embedded in it
    meta["history"] = [h.as_dict() for h in outcome.history]
    meta["wall_seconds"] = outcome.seconds
    meta["attack"] = {**{k: v for k, v in outcome.as_dict().items() if k != "history"}, "victim": victim_path}
    if isinstance(outcome.model, TransformedModel):
        meta["input_transform"] = outcome.budget.to_dict()
    elif isinstance(outcome.model, ServedModel):
        meta["served_as"] = {"attack": outcome.name, "budget": outcome.budget.to_dict(), "what": outcome.model.describe()}
    return meta


def save_attacked(path: str | Path, outcome: AttackOutcome, meta: dict, *, force: bool = False) -> Path:
    """Save the attacked weights (for a served model such as input-transform: the victim's, what sits in front of it
    in ``meta``); under torchrun rank 0 alone writes."""
    model = outcome.model.model if isinstance(outcome.model, ServedModel) else outcome.model
    if is_main_process():
        save_model(path, model, meta, force=force)
    return Path(path)


__all__ = [
    "AdversarialBudget",
    "AttackContext",
    "AttackOutcome",
    "AttackSpec",
    "Budget",
    "CleanTraining",
    "DetectorWrapped",
    "DistillBudget",
    "EvasionBudget",
    "FinePruneBudget",
    "FineTuneBudget",
    "PruneBudget",
    "PurifiedModel",
    "PurifyBudget",
    "ServedModel",
    "TrainingBudget",
    "TransferBudget",
    "TransformBudget",
    "TransformedModel",
    "attacked_meta",
    "attacker_data",
    "evaluate_model",
    "get_attack",
    "list_attacks",
    "load_output_layer",
    "register_attack",
    "run_attack",
    "save_attacked",
    "save_output_layer",
    "select_classes",
    "watermark_row",
    "with_output_layer",
]
