"""Model extraction by retraining on the victim's labels (hard-label distillation).

The attacker queries the victim as a black box on their own images, takes its predicted
labels, and trains a FRESH model on them. The student copies the task; the backdoor never
reaches it because the trigger images are not among the attacker's queries. Lukas et al.
("SoK: How Robust is Image Classification DNN Watermarking?", IEEE S&P 2022) found this
removes Adi et al.'s watermark at no loss of test accuracy.

Distillation with soft labels at temperature T tends to this as T -> 0; hard labels are
what an API that answers only labels gives.

    backmark attack distill --model marked.safetensors --out student.safetensors --data-fraction 0.5
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import InvalidConfig
from ..models import create_model
from ..training import predict, train
from .base import AttackContext, TrainingBudget, attacker_data, register_attack


@dataclass(frozen=True)
class DistillBudget(TrainingBudget):
    """Budget of extraction by retraining.

    data_fraction: share of the victim's training IMAGES the attacker holds (their true
    labels are not used: the victim labels them); epochs, lr and schedule default to the
    victim's own recipe (None), so the student gets the victim's training budget; student:
    the registered architecture to train (None = the victim's).
    """

    lr: float | None = None
    schedule: str | None = None
    student: str | None = None

    def __post_init__(self):
        # validate the shared fields; lr/schedule None are resolved from the victim's recipe
        TrainingBudget(
            epochs=self.epochs, lr=self.lr or 1.0, schedule=self.schedule or "constant", batch_size=self.batch_size,
            data_fraction=self.data_fraction,
        )


@register_attack("distill", DistillBudget, "train a fresh model on the victim's predicted labels (model extraction)")
def distill(model, data, budget: DistillBudget, ctx: AttackContext):
    student_name = budget.student or ctx.model_name
    if student_name is None:
        raise InvalidConfig("name the student architecture (budget option student): the victim's is not known")
    att = attacker_data(data, budget.data_fraction, budget.seed)
    labels = predict(model, att.train_x).to(att.train_y.device)  # the victim as a black box
    agreement = float((labels == att.train_y).float().mean())
    labelled = replace(att, train_y=labels)
    cfg = ctx.original.replace(
        epochs=budget.resolved_epochs(ctx.original), lr=budget.lr, schedule=budget.schedule, batch_size=budget.batch_size,
        augment=budget.augment, seed=budget.seed,
    ).replace(trigger_k=0)
    student = create_model(student_name, num_classes=labelled.num_classes, input_shape=labelled.input_shape,
                           mean=labelled.mean, std=labelled.std, seed=cfg.seed)
    device = ctx.device if ctx.device is not None else next(model.parameters()).device
    history = train(student, labelled, cfg, device=device, reporter=ctx.reporter)
    return student, history, {"student": student_name, "queries": len(labels), "victim_label_agreement": agreement}
