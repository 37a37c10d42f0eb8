"""The robustness table: its strict config, and a --quick run end to end (seeds x schemes x attacks, resume)."""
import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from backmark.cli import main
from backmark.errors import InvalidConfig, UnknownName
from backmark.experiments.reproduce import RobustnessConfig, load_config, parse_robustness, render_robustness

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("robustness-*.json"))

TINY = {
    "kind": "robustness",
    "name": "tiny-robustness",
    "dataset": "fashion-mnist",
    "seeds": [0, 1, 2],
    "key_size": 20,
    "train": {"trigger_k": 32},
    "schemes": [
        {"name": "abstract", "source": "abstract", "seeds": [0]},  # seed 1: the margin scheme alone
        {"name": "heldout + margin", "source": "heldout", "train": {"hardening": "margin", "margin_epsilon": 0.1}},
    ],
    "attacks": [
        {"attack": "distill", "label": "extract", "budget": {"data_fraction": 0.5}},
        {"attack": "evasion", "label": "evasion", "budget": {"data_fraction": 0.5}},
        {"attack": "input-transform", "label": "JPEG", "schemes": ["abstract"], "seeds": [0]},
    ],
    "quick": {"train_size": 600, "test_size": 200, "max_epochs": 1, "seeds": 2},
}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_committed_configs_are_valid(path):
    cfg = load_config(path)
    assert isinstance(cfg, RobustnessConfig) and cfg.name == path.stem and cfg.seeds
    assert len(cfg.seeds) >= 3 or cfg.dataset != "fashion-mnist"  # the priority: Fashion-MNIST over 3 seeds
    assert {"abstract", "heldout"} == {s.source for s in cfg.schemes}
    attacks = {a.attack for a in cfg.attacks}
    assert {"distill", "rtal", "adv-finetune", "evasion", "purify", "input-transform"} <= attacks


def test_unknown_or_bad_options_are_refused():
    assert parse_robustness(TINY).schemes[1].train["hardening"] == "margin"
    for bad, message in (
        ({**TINY, "epochs": 3}, "unknown option.*epochs"),
        ({**TINY, "schemes": [{"name": "x", "source": "folder"}]}, "source must be one of"),
        ({**TINY, "schemes": [{"name": "x", "train": {"hardening": "max"}}]}, "hardening"),
        ({**TINY, "schemes": [{"name": "x"}, {"name": "x"}]}, "distinct names"),
        ({**TINY, "attacks": [{"attack": "distill", "budget": {"temperature": 3}}]}, "temperature"),
        ({**TINY, "attacks": [{"attack": "rtal", "schemes": ["nope"]}]}, "unknown scheme"),
        ({**TINY, "attacks": [{"attack": "transfer"}]}, "another task"),
        ({**TINY, "seeds": []}, "seeds"),
        ({**TINY, "attacks": [{"attack": "rtal", "seeds": [7]}]}, "the run's seeds"),
        ({**TINY, "schemes": [{"name": "x", "seeds": [7]}]}, r"schemes\[0\].seeds must be some of the run's seeds"),
        ({**TINY, "quick": {"seed": 1}}, "unknown option"),
    ):
        with pytest.raises(InvalidConfig, match=message):
            parse_robustness(bad)
    with pytest.raises(UnknownName):
        parse_robustness({**TINY, "attacks": [{"attack": "erase"}]})


@pytest.mark.slow
def test_quick_run_end_to_end_and_resume(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "out"
    run = CliRunner()
    args = ["reproduce", "--config", str(cfg), "--out", str(out), "--quick", "--device", "cpu", "-q"]
    res = run.invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc == json.loads((out / "results.json").read_text()) and doc["quick"] and doc["max_epochs"] == 1
    assert [s["seed"] for s in doc["seeds"]] == [0, 1]
    assert all(s["excluded_trigger_images"] == 20 and s["train_images"] == 580 for s in doc["seeds"])
    assert {(v["seed"], v["scheme"]) for v in doc["victims"]} == {(0, "abstract"), (0, "heldout + margin"), (1, "heldout + margin")}
    assert all(v["config"]["hardening"] == ("margin" if "margin" in v["scheme"] else "none") for v in doc["victims"])
    rows = {(r["seed"], r["label"], r["scheme"]) for r in doc["attacks"]}
    assert len(rows) == len(doc["attacks"]) == 2 * (2 + 1) + 1 and (0, "JPEG", "abstract") in rows
    assert (1, "extract", "abstract") not in rows and (1, "extract", "heldout + margin") in rows  # a scheme's seeds
    assert (0, "JPEG", "heldout + margin") not in rows and (1, "JPEG", "abstract") not in rows
    assert all(r["budget"].get("seed", r["seed"] + 1) == r["seed"] + 1 for r in doc["attacks"])  # never the owner's seed
    ev = [r for r in doc["attacks"] if r["label"] == "evasion"]
    assert all(r["detector"] and 0 <= r["detector"]["trigger_flag_rate"] <= 1 for r in ev)
    # the summary is the rows' mean and range, per (attack, scheme)
    cell = next(c for c in doc["summary"]["attacks"] if c["label"] == "extract" and c["scheme"] == "heldout + margin")
    matches = [r["watermark"]["matches"] for r in doc["attacks"] if r["label"] == "extract" and r["scheme"] == "heldout + margin"]
    assert cell["matches"] == {"mean": statistics.fmean(matches), "min": min(matches), "max": max(matches), "n": 2}
    assert cell["verified"] == sum(r["watermark"]["verdict"] == "ownership" for r in doc["attacks"]
                                   if r["label"] == "extract" and r["scheme"] == "heldout + margin")
    report = (out / "report.md").read_text()
    assert report == render_robustness(doc) and "QUICK MODE" in report and "heldout + margin" in report
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = run.invoke(main, args)
    assert res.exit_code == 2 and "already exists" in res.output
    res = run.invoke(main, [*args, "--resume", "--json"])  # every trained model is reused: the same numbers
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert [v["test_acc"] for v in again["victims"]] == [v["test_acc"] for v in doc["victims"]]
    assert [r["watermark"]["matches"] for r in again["attacks"] if r["label"] == "extract"] == \
        [r["watermark"]["matches"] for r in doc["attacks"] if r["label"] == "extract"]
