"""The README's Python API block runs as written (on a CPU machine too: it picks its device)."""
import re

import pytest

from .conftest import FMNIST_DIR, REPO


@pytest.mark.slow
def test_readme_python_block_runs_as_written(tmp_path, monkeypatch, capsys):
    if not FMNIST_DIR.exists():
        pytest.skip("Fashion-MNIST not installed")
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme[readme.index("## Python API"):], re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it writes its key files into the current folder
    exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert out.startswith("OWNERSHIP VERIFIED"), out
    assert (tmp_path / "marking-key.json").exists() and (tmp_path / "verification-key.json").exists()
