"""The reproduction pipeline: strict configs, and a --quick run end to end through the CLI."""
import json
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

from backmark.cli import main
from backmark.core.stats import binomial_tail
from backmark.errors import InvalidConfig, UnknownName
from backmark.experiments.reproduce import expand_path, load_config, parse_config, render_report

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.json")
                 if not p.stem.startswith("robustness-"))  # the robustness table's configs: tests/test_robustness.py

TINY = {
    "name": "tiny",
    "dataset": "fashion-mnist",
    "model": "fmnist-cnn",
    "train": {"trigger_k": 64},
    "embed": {"trigger_k": 64},
    "key": {"size": 30},
    "attacks": [
        {"attack": "ftll", "label": "FTLL"},
        {"attack": "rtal", "label": "RTAL"},
        {"attack": "prune", "label": "prune 50%", "budget": {"amount": 0.5}},
        {"attack": "distill", "budget": {"data_fraction": 0.5}},
        {"attack": "fine-prune", "victims": ["FROMSCRATCH"]},
        {"attack": "input-transform", "label": "JPEG", "victims": ["PRETRAINED"]},
    ],
    "transfer": [{"label": "to mnist", "dataset": "mnist-5k", "victims": ["FROMSCRATCH"]}],
    "ownership": {"clean_models": 3, "fresh_keys": 100},
    "quick": {"train_size": 1000, "test_size": 300, "max_epochs": 1, "clean_models": 1, "fresh_keys": 20, "transfer_train_size": 300},
}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_committed_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.attacks
    labels = {a.name for a in cfg.attacks}
    assert {"FTLL", "FTAL", "RTLL", "RTAL"} <= labels
    if cfg.ownership is None:  # allowed where a sibling config on the same data and model runs it
        assert (path.parent / path.name.replace("-paper-triggers", "")).exists()
        assert load_config(path.parent / path.name.replace("-paper-triggers", "")).ownership is not None
    else:
        assert cfg.ownership.clean_models >= 10 and cfg.ownership.fresh_keys >= 100


def test_unknown_keys_are_refused_at_every_level():
    with pytest.raises(InvalidConfig, match="unknown option.*epochs"):
        parse_config({**TINY, "epochs": 3})
    with pytest.raises(InvalidConfig, match=r"config.key: unknown option.*colour"):
        parse_config({**TINY, "key": {"colour": "red"}})
    with pytest.raises(InvalidConfig, match="unknown budget option"):
        parse_config({**TINY, "attacks": [{"attack": "ftll", "budget": {"amount": 0.5}}]})
    with pytest.raises(InvalidConfig, match="unknown training options"):
        parse_config({**TINY, "train": {"epoch": 3}})
    with pytest.raises(InvalidConfig, match="unknown option.*victim"):
        parse_config({**TINY, "attacks": [{"attack": "ftll", "victim": "NO-WM"}]})
    with pytest.raises(InvalidConfig, match="victims"):
        parse_config({**TINY, "attacks": [{"attack": "ftll", "victims": ["NO-WM"]}]})
    with pytest.raises(InvalidConfig, match="unique"):
        parse_config({**TINY, "attacks": [{"attack": "ftll"}, {"attack": "ftll"}]})
    with pytest.raises(InvalidConfig, match="goes under 'transfer'"):
        parse_config({**TINY, "attacks": [{"attack": "transfer"}]})
    with pytest.raises(UnknownName):
        parse_config({**TINY, "attacks": [{"attack": "erase"}]})


def test_toml_and_json_configs_agree(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"name": "a", "dataset": "fashion-mnist", "attacks": [{"attack": "ftll", "budget": {"epochs": 2}}]}))
    (tmp_path / "a.toml").write_text('name = "a"\ndataset = "fashion-mnist"\n[[attacks]]\nattack = "ftll"\nbudget = { epochs = 2 }\n')
    assert load_config(tmp_path / "a.json") == load_config(tmp_path / "a.toml")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(InvalidConfig, match="not a valid json"):
        load_config(tmp_path / "bad.json")


def test_paths_expand_environment_variables(monkeypatch):
    monkeypatch.setenv("BACKMARK_DATA", "/data/shared")
    assert expand_path("${BACKMARK_DATA}/pics") == "/data/shared/pics"
    with pytest.raises(InvalidConfig, match="NO_SUCH_VAR"):
        expand_path("${NO_SUCH_VAR}/x")


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("Fashion-MNIST not installed")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "out"
    run = CliRunner()
    args = ["reproduce", "--config", str(cfg), "--out", str(out), "--quick", "--device", "cpu", "-q"]
    res = run.invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc == json.loads((out / "results.json").read_text())
    # provenance: config, seed, version, commit, device, wall time
    assert doc["quick"] and doc["config"]["name"] == "tiny" and doc["seed"] == 0 and doc["backmark"]
    assert doc["git_commit"] and doc["device"] == "cpu" and doc["wall_seconds"] > 0 and doc["max_epochs"] == 1
    assert [r["model"] for r in doc["table1"]] == ["NO-WM", "FROMSCRATCH", "PRETRAINED"]
    assert all(r["epochs"] == 1 and r["n"] == 30 for r in doc["table1"])
    rows = {(r["label"], r["victim"]): r for r in doc["attacks"]}
    assert len(rows) == 10 and ("JPEG", "PRETRAINED") in rows and ("fine-prune", "PRETRAINED") not in rows
    rtal = rows[("RTAL", "FROMSCRATCH")]
    assert rtal["paper_view"] == "kept_layer" and rtal["paper"] == rtal["kept_layer"] and rtal["blackbox"] is not None
    assert rows[("FTLL", "FROMSCRATCH")]["paper"] == rows[("FTLL", "FROMSCRATCH")]["blackbox"]
    assert rows[("distill", "PRETRAINED")]["budget"]["seed"] == 1  # the attacker never reuses the owner's seed
    for r in doc["attacks"] + doc["transfer"]:
        assert {"test_acc", "seconds", "budget"} <= set(r)
        w = r["paper"]
        assert w["p_value"] == float(binomial_tail(w["matches"], w["n"], Fraction(1, 10))) and w["trigger_acc"] == w["matches"] / w["n"]
    (t,) = doc["transfer"]
    assert t["target_task"].startswith("mnist-5k: 300 train") and t["kept_layer"] is not None
    own = doc["ownership"]
    assert own["fresh_keys"] == 20 and own["clean_models"] == 2 and own["null_tests"] == 2 + 20 * 2 + 20 * 2
    assert own["false_claims"] == 0 and len(own["piracy"]["matrix"]) == 4
    for f in ("report.md", "figure6.png", "attacks.png", "pvalues.png"):
        assert (out / f).stat().st_size > 1000
    assert (out / "figure6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "QUICK MODE" in report and "Table 1" in report and "Non-trivial ownership" in report and "piracy" in report
    assert report == render_report(doc)
    # an earlier run's results are not overwritten without --force; --resume reuses its models
    res = run.invoke(main, args)
    assert res.exit_code == 2 and "already exists" in res.output
    res = run.invoke(main, [*args, "--resume", "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert [r["test_acc"] for r in again["table1"]] == [r["test_acc"] for r in doc["table1"]]
