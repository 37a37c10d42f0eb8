"""The ``backmark`` click group: every command module registers its commands on it."""
from __future__ import annotations

import os
import sys

import click
from click.exceptions import NoArgsIsHelpError

from ..errors import BackmarkError
from ..training.memory import keep_freed_memory_unless_told
from ..version import __version__


class Shell(click.Group):
    """A click group whose usage errors are one line (what is wrong, where to read more), exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:  # a bare `backmark`: the help, as asked
            click.echo(e.format_message())
            sys.exit(0)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "backmark"
            click.echo(f"error: {e.format_message()} (see {where} --help)", err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=Shell, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    try:
        keep_freed_memory_unless_told()  # CPU training steps reuse their freed activations (training/memory.py)
    except BackmarkError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone prints results (errors still reach stderr)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of the process)
