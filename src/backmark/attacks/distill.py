"""Model extraction: train a FRESH model on the victim's answers (hard labels or soft ones).

The attacker queries the victim as a black box on images of their own, and trains a fresh
student on its answers:

- ``labels="hard"`` (model extraction): the victim's predicted labels, what an API that
  answers only labels gives. Lukas et al. ("SoK: How Robust is Image Classification DNN
  Watermarking?", IEEE S&P 2022) found this removes Adi et al.'s watermark at no loss of
  test accuracy: the trigger images are not among the queries.
- ``labels="soft"`` (knowledge distillation, Hinton et al. 2015): the victim's full score
  vector, softened at ``temperature`` T; the student's logits are divided by T while it trains
  and the gradients scaled by T^2, as in Hinton et al.

The queries are the victim's training images (``data_fraction`` of them; their true labels are
not used) or, with ``queries``, the training split of ANOTHER registered dataset of the same
input shape (e.g. mnist-5k for Fashion-MNIST), found as any dataset is ($BACKMARK_DATA or its
default folder). The student is scored on the victim's test set.

    backmark attack distill --model marked.safetensors --out student.safetensors --data-fraction 0.5
    backmark attack distill --model marked.safetensors --out student.safetensors --labels soft --temperature 4 --queries mnist-5k
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..data import Dataset, load_dataset
from ..errors import InvalidConfig
from ..models import create_model
from ..training import logits, train
from .base import AttackContext, TrainingBudget, attacker_data, register_attack

LABEL_KINDS = ("hard", "soft")
DEFAULT_TEMPERATURE = 4.0


@dataclass(frozen=True)
class DistillBudget(TrainingBudget):
    """Budget of extraction by retraining.

    data_fraction: share of the query images the attacker holds; epochs, lr and schedule default
    to the victim's own recipe (None), so the student gets the victim's training budget; student:
    the registered architecture to train (None = the victim's); labels: "hard" (predicted labels)
    or "soft" (scores at ``temperature``, default 4); queries: another dataset's name whose
    training images are the queries (None = the victim's training images).
    """

    lr: float | None = None
    schedule: str | None = None
    student: str | None = None
    labels: str = "hard"
    temperature: float | None = None
    queries: str | None = None

    def __post_init__(self):
        # validate the shared fields; lr/schedule None are resolved from the victim's recipe
        TrainingBudget(
            epochs=self.epochs, lr=self.lr or 1.0, schedule=self.schedule or "constant", batch_size=self.batch_size,
            data_fraction=self.data_fraction,
        )
        if self.labels not in LABEL_KINDS:
            raise ValueError(f"labels must be one of {LABEL_KINDS}, not {self.labels!r}")
        if self.temperature is not None and (self.labels != "soft" or self.temperature <= 0):
            raise ValueError("temperature goes with labels='soft' and must be positive")

    @property
    def resolved_temperature(self) -> float:
        return self.temperature if self.temperature is not None else DEFAULT_TEMPERATURE


class _Tempered(nn.Module):
    """The student as it trains on soft targets: logits / T, gradients scaled by T^2 (Hinton et al.)."""

    def __init__(self, student: nn.Module, temperature: float):
        super().__init__()
        self.student, self.t = student, temperature

    def forward(self, x):
        out = self.student(x) / self.t
        if out.requires_grad:
            out.register_hook(lambda g: g * (self.t * self.t))
        return out


def query_images(data: Dataset, budget: DistillBudget) -> Dataset:
    """The attacker's query set: ``data_fraction`` of the victim's training images, or of ``queries``' training split."""
    source = data
    if budget.queries is not None:
        source = load_dataset(budget.queries)
        if source.input_shape != data.input_shape:
            raise InvalidConfig(f"query set {budget.queries} has images {source.input_shape}, the victim takes {data.input_shape}")
    return attacker_data(source, budget.data_fraction, budget.seed)


@register_attack("distill", DistillBudget, "train a fresh model on the victim's labels or soft scores (model extraction, distillation)")
def distill(model, data, budget: DistillBudget, ctx: AttackContext):
    student_name = budget.student or ctx.model_name
    if student_name is None:
        raise InvalidConfig("name the student architecture (budget option student): the victim's is not known")
    att = query_images(data, budget)
    device = ctx.device if ctx.device is not None else next(model.parameters()).device
    scores = logits(model, att.train_x, device=device)  # the victim as a black box: one answer per query
    labels = scores.argmax(1).to(att.train_y.device)
    notes = {"student": student_name, "queries": len(labels), "labels": budget.labels, "query_set": att.name}
    if budget.queries is None:
        notes["victim_label_agreement"] = float((labels == att.train_y).float().mean())
    # the student learns the attacker's query images with the victim's answers; it is scored on the victim's test set
    labelled = replace(att, train_y=labels, test_x=data.test_x, test_y=data.test_y.to(labels.device), classes=data.classes)
    cfg = ctx.original.replace(
        epochs=budget.resolved_epochs(ctx.original), lr=budget.lr, schedule=budget.schedule, batch_size=budget.batch_size,
        augment=budget.augment, seed=budget.seed,
    ).replace(trigger_k=0, hardening="none")
    student = create_model(student_name, num_classes=data.num_classes, input_shape=data.input_shape,
                           mean=att.mean, std=att.std, seed=cfg.seed)
    if budget.labels == "hard":
        history = train(student, labelled, cfg, device=device, reporter=ctx.reporter)
    else:
        t = budget.resolved_temperature
        soft = torch.softmax(scores / t, dim=1)
        history = train(_Tempered(student, t), labelled, cfg, device=device, reporter=ctx.reporter, targets=soft)
        notes["temperature"] = t
    return student.eval(), history, notes
