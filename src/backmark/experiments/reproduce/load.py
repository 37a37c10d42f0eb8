"""Read a reproduction config file: the paper's experiments (config.py) or, for ``"kind": "robustness"``,
the robustness table (robustness_config.py)."""
from __future__ import annotations

import os

from .config import ReproduceConfig, parse_config, read_document
from .robustness_config import RobustnessConfig, parse_robustness


def load_config(path: str | os.PathLike) -> ReproduceConfig | RobustnessConfig:
    """Read and validate a .json or .toml config; its ``kind`` picks which one."""
    doc, where = read_document(path)
    if isinstance(doc, dict) and doc.get("kind") == "robustness":
        return parse_robustness(doc, where=where)
    return parse_config(doc, where=where)
