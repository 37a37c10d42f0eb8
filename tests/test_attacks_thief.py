"""The attacks a thief would use: extraction and distillation (hard, soft, another query set, another
student), adversarial fine-tuning, evasion by an OOD detector, purification by a denoising autoencoder."""
import pytest
import torch
import torch.nn.functional as F

from backmark.attacks import DetectorWrapped, DistillBudget, EvasionBudget, PurifiedModel, evaluate_model, run_attack
from backmark.attacks.autoencoder import train_autoencoder
from backmark.attacks.distill import _Tempered
from backmark.attacks.evasion import calibrate
from backmark.errors import InvalidConfig
from backmark.training import TrainConfig, accuracy, predict

from .conftest import MARK_CFG

CFG = TrainConfig(**MARK_CFG)


@pytest.fixture(scope="module")
def marked(marked_fmnist):
    return marked_fmnist[0]


def test_budgets_refuse_what_does_not_go_together():
    assert DistillBudget(labels="soft").resolved_temperature == 4.0
    for bad in ({"labels": "logits"}, {"temperature": 2.0}, {"labels": "soft", "temperature": 0}):
        with pytest.raises(InvalidConfig):
            DistillBudget.from_dict(bad)
    for bad in ({"detector": "gaussian"}, {"accuracy_cost": 1.0}, {"data_fraction": 0}):
        with pytest.raises(InvalidConfig):
            EvasionBudget.from_dict(bad)


def test_tempered_student_divides_logits_and_scales_gradients():
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    x, target = torch.randn(4, 5), torch.softmax(torch.randn(4, 3), 1)
    F.cross_entropy(_Tempered(net, 4.0)(x), target).backward()
    tempered = net.weight.grad.clone()
    net.weight.grad = None
    (16 * F.cross_entropy(net(x) / 4.0, target)).backward()  # Hinton et al.: T^2 x the soft loss
    assert torch.allclose(tempered, net.weight.grad, atol=1e-6)


@pytest.mark.slow
def test_soft_distillation_and_other_queries_and_students_train_real_students(marked, fmnist_2k):
    soft = run_attack("distill", marked, fmnist_2k, {"epochs": 2, "labels": "soft", "temperature": 2.0}, original=CFG,
                      model_name="fmnist-cnn", device="cpu")
    assert soft.notes["labels"] == "soft" and soft.notes["temperature"] == 2.0
    assert accuracy(soft.model, fmnist_2k.test_x, fmnist_2k.test_y) > 0.6  # it learned the task from the scores alone
    agree = (predict(soft.model, fmnist_2k.test_x) == predict(marked, fmnist_2k.test_x)).float().mean()
    assert agree > 0.7
    other = run_attack("distill", marked, fmnist_2k, {"epochs": 1, "queries": "mnist-5k", "data_fraction": 0.25,
                                                      "student": "fmnist-lenet"}, original=CFG, model_name="fmnist-cnn", device="cpu")
    assert other.notes["query_set"] == "mnist-5k" and other.notes["queries"] == 1000 and "victim_label_agreement" not in other.notes
    assert other.notes["student"] == "fmnist-lenet" and type(other.model).__name__ == "LeNet5"
    assert predict(other.model, fmnist_2k.test_x[:10]).shape == (10,)


@pytest.mark.slow
def test_adversarial_fine_tuning_trains_on_perturbed_images(marked, fmnist_2k, monkeypatch):
    import backmark.attacks.adversarial as adversarial

    calls = []
    real = adversarial.signed_gradient_ascent

    def counting(net, x, y, **kw):
        calls.append((len(x), kw["epsilon"]))
        return real(net, x, y, **kw)

    monkeypatch.setattr(adversarial, "signed_gradient_ascent", counting)
    before = {k: v.clone() for k, v in marked.state_dict().items()}
    out = run_attack("adv-finetune", marked, fmnist_2k, {"epochs": 1, "data_fraction": 0.1, "epsilon": 0.05}, original=CFG, device="cpu")
    assert all(torch.equal(v, before[k]) for k, v in marked.state_dict().items())
    assert len(calls) == -(-200 // CFG.batch_size) and all(e == 0.05 for _, e in calls) and sum(n for n, _ in calls) == 200
    assert out.notes == {"epsilon": 0.05, "steps": 3} and len(out.history) == 1


def test_calibration_flags_as_much_as_the_cost_allows():
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    correct = torch.tensor([False, True, True, True, True])
    # flagging the top 1 gains 0.1/5; the top 2 cost (1 - 0.2)/5 = 0.16
    assert calibrate(scores, correct, 10, cost=0.0) == 4.0  # only the wrong one is flagged
    assert calibrate(scores, correct, 10, cost=0.2) == 3.0
    assert calibrate(scores, correct, 10, cost=0.99) < 1.0  # all flagged


def test_detector_wrapped_model_answers_flagged_queries_at_random():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 10))
    x = torch.rand(400, 1, 4, 4)
    honest = DetectorWrapped(net, "max-softmax", float("inf"))
    assert torch.equal(predict(honest, x), predict(net, x)) and not honest.flags(x).any()
    liar = DetectorWrapped(net, "max-softmax", float("-inf"), seed=3)
    answers = predict(liar, x)
    assert liar.flags(x).all() and len(set(answers.tolist())) == 10  # uniformly random answers
    assert (answers == predict(net, x)).float().mean() < 0.25
    assert torch.equal(answers, predict(liar, x))  # a repeated query gets the same answer
    assert torch.equal(answers, predict(DetectorWrapped(net, "max-softmax", float("-inf"), seed=3), x))
    assert (answers != predict(DetectorWrapped(net, "max-softmax", float("-inf"), seed=4), x)).float().mean() > 0.7
    assert max(torch.bincount(answers, minlength=10).tolist()) < 80  # about 40 of 400 each


@pytest.mark.slow
def test_an_autoencoder_detector_flags_abstract_triggers_and_verification_goes_through_it(marked, fmnist_2k, small_keys):
    out = run_attack("evasion", marked, fmnist_2k, {"detector": "autoencoder", "data_fraction": 1.0, "epochs": 8}, original=CFG,
                     device="cpu")
    assert isinstance(out.model, DetectorWrapped) and out.notes["calibration_images"] == 1000
    row = evaluate_model(out.model, fmnist_2k.test_x, fmnist_2k.test_y, *small_keys)
    det = row["detector"]
    assert det["test_flag_rate"] == pytest.approx(out.notes["test_flag_rate"])
    assert det["trigger_flag_rate"] > det["test_flag_rate"] + 0.25  # abstract images are easy to tell from clothes
    assert not row["blackbox"]["passed"] and row["blackbox"]["verdict"] == "not-verified"  # answered at random: evaded
    for detector in ("max-softmax", "energy"):
        o = run_attack("evasion", marked, fmnist_2k, {"detector": detector, "data_fraction": 0.5}, original=CFG, device="cpu")
        assert 0 <= o.notes["calibration_flag_rate"] < 0.5 and o.notes["threshold"] < float("inf")
        # at most the affordable cost on the calibration images (1 point), up to their sampling error on the test split
        assert accuracy(marked, fmnist_2k.test_x, fmnist_2k.test_y) - accuracy(o.model, fmnist_2k.test_x, fmnist_2k.test_y) < 0.04


@pytest.mark.slow
def test_purification_serves_the_victim_behind_a_denoiser(marked, fmnist_2k):
    out = run_attack("purify", marked, fmnist_2k, {"data_fraction": 1.0, "epochs": 5}, original=CFG, device="cpu")
    assert isinstance(out.model, PurifiedModel) and out.notes["autoencoder_images"] == 2000
    x = fmnist_2k.test_x[:200].float() / 255
    with torch.no_grad():
        assert torch.equal(out.model(x), marked(out.model.autoencoder(x)))
        noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
        assert F.mse_loss(out.model.autoencoder(noisy), x) < F.mse_loss(noisy, x)  # it denoises
    assert accuracy(out.model, fmnist_2k.test_x, fmnist_2k.test_y) > 0.5


def test_autoencoder_refuses_odd_shapes():
    with pytest.raises(ValueError, match="divisible by 4"):
        train_autoencoder(torch.zeros(4, 1, 30, 30, dtype=torch.uint8), epochs=1)
