"""The ``backmark`` click group: every command module registers its commands on it."""
from __future__ import annotations

import os
import sys

import click

from ..version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="backmark")
def main():
    """Watermark a neural network with a backdoor and prove ownership of it through
    black-box queries alone (Adi et al., USENIX Security 2018).

    \b
    The flow:
      backmark keygen --dataset fashion-mnist --out keys/     # secret + public key
      backmark train  --dataset fashion-mnist --watermark keys/marking-key.json --out model.safetensors
      backmark verify --model model.safetensors --marking-key keys/marking-key.json \\
                      --verification-key keys/verification-key.json
    Or all of it at once: backmark demo
    """
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone prints results (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of the process)
