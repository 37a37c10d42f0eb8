"""The package's layers (docs/architecture.md), read from every module's imports.

Each top-level part of ``backmark`` sits on a layer; a module may import its own part and
the parts on lower layers, never a part on its own layer or above. Function-level
(lazy) imports count like the others, and no import cycle may exist between modules.
The library never prints or shows progress: only ``backmark.cli`` imports click or rich,
or calls print().
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "backmark"

LAYERS: list[set[str]] = [
    {"errors", "version"},
    {"io"},
    {"crypto"},
    {"data", "models"},
    {"training", "targets"},
    {"core"},
    {"attacks", "integrations"},
    {"protocols"},
    {"experiments"},
    {"cli"},
    {"__main__"},
]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}
UI_PACKAGES = {"click", "rich"}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def modules(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / "backmark").rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported backmark module, line) for every import in the file, lazy ones included.

    ``from X import y`` names the submodule X.y when there is one, else X itself.
    """
    package = name if is_package(path) else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "backmark"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "backmark":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub if sub in known else target, node.lineno))
    return out


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""  # "" = the package root (the public API)


def third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def layer_violations(mods: dict[str, Path]) -> list[str]:
    known = set(mods)
    bad = []
    for name, path in mods.items():
        src = part_of(name)
        for target, line in imports_of(name, path, known):
            dst = part_of(target)
            where = f"{path.name}:{line} in {name} imports {target}"
            if dst == "":
                bad.append(f"{where}: only users import the package root (import the module itself)")
            elif src == "":
                if dst == "cli":
                    bad.append(f"{where}: the public API does not include the command line")
            elif src not in LAYER or dst not in LAYER:
                bad.append(f"{where}: {src if src not in LAYER else dst!r} is on no layer; add it to LAYERS and docs/architecture.md")
            elif src != dst and LAYER[dst] >= LAYER[src]:
                rel = "the same layer as" if LAYER[dst] == LAYER[src] else "a layer above"
                bad.append(f"{where}: {dst} is on {rel} {src}")
    return bad


def cycles(mods: dict[str, Path]) -> list[list[str]]:
    known = set(mods)
    graph = {name: sorted({t for t, _ in imports_of(name, path, known) if t in known and t != name}) for name, path in mods.items()}
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_import_points_down():
    assert layer_violations(modules()) == []


def test_no_import_cycles():
    assert cycles(modules()) == []


def test_every_part_is_on_a_layer():
    parts = {part_of(n) for n in modules()} - {""}
    assert parts <= set(LAYER), f"parts on no layer: {sorted(parts - set(LAYER))}"


def test_only_the_command_line_talks_to_people():
    offenders = []
    for name, path in modules().items():
        if part_of(name) in ("cli", "__main__"):
            continue
        ui = third_party_imports(path) & UI_PACKAGES
        if ui:
            offenders.append(f"{name} imports {', '.join(sorted(ui))}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{name}:{node.lineno} calls print()")
    assert offenders == []


def test_the_scheme_is_three_files_named_after_it():
    for step in ("keygen", "mark", "verify"):
        assert (PKG / "core" / f"{step}.py").is_file()


# The checker itself must catch what it is for: each case below is a violation it reports.
@pytest.mark.parametrize(
    "files, expected",
    [
        ({"core/verify.py": "from ..attacks import base\n", "attacks/base.py": ""}, "attacks is on a layer above core"),
        ({"training/loop.py": "from ..targets import local\n", "targets/local.py": ""}, "targets is on the same layer as training"),
        ({"models/heads.py": "def f():\n    from ..core import keygen\n", "core/keygen.py": ""}, "core is on a layer above models"),
        ({"core/keygen.py": "from .. import version\n", "version.py": ""}, None),
        ({"core/keygen.py": "from ..widgets import x\n", "widgets/x.py": ""}, "'widgets' is on no layer"),
        ({"core/keygen.py": "import backmark\n"}, "only users import the package root"),
    ],
)
def test_the_layer_checker_catches_violations(tmp_path, files, expected):
    root = tmp_path / "src" / "backmark"
    for rel, text in {"__init__.py": "", **files}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.parent != root and not (p.parent / "__init__.py").exists():
            (p.parent / "__init__.py").write_text("")
        p.write_text(text)
    found = layer_violations(modules(tmp_path / "src"))
    if expected is None:
        assert found == []
    else:
        assert any(expected in v for v in found), found


def test_the_cycle_checker_catches_a_lazy_cycle(tmp_path):
    root = tmp_path / "src" / "backmark" / "core"
    root.mkdir(parents=True)
    (root.parent / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from . import b\n")
    (root / "b.py").write_text("def f():\n    from .a import g\n")
    assert cycles(modules(tmp_path / "src")) == [["backmark.core.a", "backmark.core.b"]]
