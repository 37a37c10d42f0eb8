"""PRETRAINED's stopping rule: stop once the watermark holds, or hold it N more epochs."""
from backmark.core.mark import watermark_held
from backmark.training import EpochStats


def _run(rule, trigger_accs):
    """The epochs a training run with these per-epoch trigger accuracies would spend."""
    for epoch, acc in enumerate(trigger_accs, 1):
        if rule(EpochStats(epoch=epoch, train_loss=0.1, test_acc=0.9, trigger_acc=acc, seconds=1.0, lr=0.01)):
            return epoch
    return len(trigger_accs)


def test_stops_as_soon_as_the_watermark_holds():
    assert _run(watermark_held(1.0), [0.3, 0.9, 1.0, 1.0, 1.0]) == 3
    assert _run(watermark_held(0.9), [0.3, 0.9, 1.0]) == 2
    assert _run(watermark_held(1.0), [0.3, 0.9, 0.99]) == 3  # never held: the epoch cap ends it


def test_hold_keeps_training_after_the_watermark_holds():
    assert _run(watermark_held(1.0, hold=2), [0.3, 1.0, 1.0, 1.0, 1.0, 1.0]) == 4
    # an epoch that dips below does not count towards the hold
    assert _run(watermark_held(1.0, hold=2), [1.0, 0.98, 1.0, 1.0, 1.0]) == 4
    assert _run(watermark_held(1.0, hold=1), [None, 1.0, 1.0]) == 3  # no trigger score: not held
