"""Fuzz the files a third party hands backmark (keys, public claims, audit logs) through the CLI.

    export PYTHONPATH=$PWD/src
    flock /tmp/backmark-heavy.lock python benchmarks/fuzz_files.py --mutations 6000 --seed 0 \\
        --out docs/results/fuzz-files.json

Each mutation (tests/mutations.py: JSON-level edits written back as backmark writes the file,
and byte-level flips, insertions, deletions, truncations) of a valid file (tests/signed_files.py)
goes through every command that reads that file (``info``, ``verify``, ``check-claim``), in
process with click's CliRunner; outcomes are counted by exit code and exception type.

- traceback: exit 3 (internal error) or an exception escaping the command. Must be 0.
- refused: exit 2 with one line (``check-claim`` also refuses with exit 1, CLAIM INVALID).
- accepted: anything else; the file must then be byte-identical to the one backmark wrote
  (``accepted_different`` must be 0). An audit log cut after a record is a valid shorter log
  (``accepted_prefix``): only the head published with a result shows the cut (docs/formats.md).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the harness lives with the tests

from click.testing import CliRunner  # noqa: E402

from backmark.cli import main  # noqa: E402
from tests.mutations import mutate  # noqa: E402
from tests.signed_files import FILES, World, is_record_prefix  # noqa: E402

# exit codes that refuse the file
REFUSED = {"info": {2}, "verify": {2}, "verify-extraction": {2}, "check-claim": {1, 2}, "check-report": {1, 2},
           "timestamp": {1, 2}}


def _run(runner: CliRunner, args: list[str]) -> tuple[int, str, str | None]:
    res = runner.invoke(main, args)
    escaped = None if res.exception is None or isinstance(res.exception, SystemExit) else type(res.exception).__name__
    return res.exit_code, res.stderr, escaped


def fuzz(count: int, seed: int, folder: Path, *, skip_unsupported: bool = False) -> dict:
    world = World(folder / "world")
    world.folder.mkdir()
    files = {k: str(v) for k, v in world.files().items()}
    runner = CliRunner()
    per_file = count // len(FILES)
    report: dict = {"mutations": per_file * len(FILES), "seed": seed, "files": {}}
    examples: dict = defaultdict(list)
    for spec in FILES:
        original = Path(files[spec.name]).read_bytes()
        mutated = folder / f"mutated-{Path(files[spec.name]).name}"
        base = {cmd[0]: _run(runner, [a.format(file=files[spec.name], **files) for a in cmd])[0] for cmd in spec.commands}
        refused = sorted(name for name, code in base.items() if code in REFUSED[name] or code == 3)
        if refused and not skip_unsupported:
            raise SystemExit(f"the valid {spec.name} is refused: {base}")
        commands = [cmd for cmd in spec.commands if cmd[0] not in refused]  # an older backmark may not read a type
        stats = {"mutations": per_file, "unchanged": 0, "exit_codes_of_the_valid_file": base, "by_command": {}}
        counters = {cmd[0]: Counter() for cmd in commands}
        for i in range(per_file):
            rng = random.Random(f"{seed}/{spec.name}/{i}")
            data, what = mutate(original, rng, style=spec.style, family="json" if i % 2 == 0 else "bytes")
            stats["unchanged"] += data == original
            mutated.write_bytes(data)
            for cmd in commands:
                code, err, escaped = _run(runner, [a.format(**{**files, "file": str(mutated)}) for a in cmd])
                c = counters[cmd[0]]
                c[f"exit {code}"] += 1
                if escaped or code == 3:
                    c["traceback"] += 1
                    examples[spec.name].append({"command": cmd[0], "mutation": what, "exception": escaped, "stderr": err[-300:]})
                elif code in REFUSED[cmd[0]] and code != base[cmd[0]]:
                    c["refused"] += 1
                    if code == 2 and len(err.strip().splitlines()) != 1:
                        c["refused_not_one_line"] += 1
                        examples[spec.name].append({"command": cmd[0], "mutation": what, "stderr": err[-300:]})
                elif data == original:
                    c["accepted_identical"] += 1
                elif spec.style == "lines" and is_record_prefix(data, original):
                    c["accepted_prefix"] += 1
                else:
                    c["accepted_different"] += 1
                    examples[spec.name].append({"command": cmd[0], "mutation": what, "exit": code})
        stats["by_command"] = {k: dict(sorted(v.items())) for k, v in counters.items()}
        report["files"][spec.name] = stats
    totals = Counter()
    for stats in report["files"].values():
        for c in stats["by_command"].values():
            totals.update({k: v for k, v in c.items() if not k.startswith("exit")})
            totals["runs"] += sum(v for k, v in c.items() if k.startswith("exit"))
    report["totals"] = {k: totals.get(k, 0) for k in ("runs", "traceback", "refused", "refused_not_one_line",
                                                       "accepted_identical", "accepted_prefix", "accepted_different")}
    report["examples"] = {k: v[:5] for k, v in examples.items()}
    return report


def markdown(report: dict) -> str:
    """The counts as tables (docs/results/fuzz-files.md is this, for the committed run)."""
    t = report["totals"]
    out = [f"`{report['command']}` ({report['mutations']} mutations, {t['runs']} command runs, {report['seconds']} s)", "",
           "| runs | traceback | refused | refused, not one line | accepted, identical | accepted, cut log | "
           "accepted, different |", "|---|---|---|---|---|---|---|",
           f"| {t['runs']} | {t['traceback']} | {t['refused']} | {t['refused_not_one_line']} | {t['accepted_identical']} | "
           f"{t['accepted_prefix']} | {t['accepted_different']} |", "",
           "| file | mutations | command | exit codes | traceback | refused | accepted (identical / cut log / different) |",
           "|---|---|---|---|---|---|---|"]
    for name, stats in report["files"].items():
        for cmd, c in stats["by_command"].items():
            codes = ", ".join(f"{k.split()[1]}: {v}" for k, v in c.items() if k.startswith("exit"))
            acc = f"{c.get('accepted_identical', 0)} / {c.get('accepted_prefix', 0)} / {c.get('accepted_different', 0)}"
            out.append(f"| {name} | {stats['mutations']} | {cmd} | {codes} | {c.get('traceback', 0)} | {c.get('refused', 0)} "
                       f"| {acc} |")
    return "\n".join(out) + "\n"


def main_(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutations", type=int, default=6000, help="mutations in all, split evenly over the file types")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the counts here (JSON)")
    ap.add_argument("--skip-unsupported", action="store_true", help="leave out commands that refuse the valid file "
                    "(to measure an older backmark that cannot read a file type)")
    ap.add_argument("--markdown", type=Path, default=None, help="print the tables of an earlier run's JSON and stop")
    a = ap.parse_args(argv)
    if a.markdown:
        print(markdown(json.loads(a.markdown.read_text())), end="")
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        report = fuzz(a.mutations, a.seed, Path(d), skip_unsupported=a.skip_unsupported)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["command"] = " ".join(["python benchmarks/fuzz_files.py", *(argv if argv is not None else sys.argv[1:])])
    text = json.dumps(report, indent=2)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)
    t = report["totals"]
    return 0 if t["traceback"] == 0 and t["accepted_different"] == 0 and t["refused_not_one_line"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main_())
