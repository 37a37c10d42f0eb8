"""Size of the package at a git revision: modules, lines, the largest modules and functions.

    python benchmarks/code_metrics.py REV [REV ...]      e.g. d3eaa3d 699119b HEAD

Reads ``src/backmark`` at each revision with ``git show`` (the work tree is not touched) and
measures functions with ``ast`` (a function's lines run from its ``def`` to its last line).
"""
from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=True).stdout


def measure(rev: str) -> dict:
    files = [f for f in _git("ls-tree", "-r", "--name-only", rev, "src/backmark").split() if f.endswith(".py")]
    sizes, functions = [], []
    for f in files:
        src = _git("show", f"{rev}:{f}")
        name = f.split("src/backmark/", 1)[1]
        sizes.append((len(src.splitlines()), name))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    sizes.sort(reverse=True)
    functions.sort(reverse=True)
    lines = [n for n, _ in sizes]
    return {"rev": rev, "modules": len(files), "lines": sum(lines), "median": statistics.median(lines),
            "largest_module": sizes[0], "over_300": sum(n > 300 for n in lines),
            "top_level": sum(1 for f in files if f.count("/") == 2), "largest_functions": functions[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revs", nargs="+")
    for rev in ap.parse_args().revs:
        m = measure(rev)
        print(f"{rev}: {m['modules']} modules, {m['lines']} lines; median {m['median']:.0f}, max {m['largest_module'][0]} "
              f"({m['largest_module'][1]}); modules > 300 lines: {m['over_300']}; top-level modules: {m['top_level']}")
        print("  largest functions:", ", ".join(f"{n} lines {name}" for n, name in m["largest_functions"]))


if __name__ == "__main__":
    main()
