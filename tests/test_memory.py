"""keep_freed_memory: a freed large tensor's pages are reused by the next one, not faulted in afresh."""
import os
import platform
import subprocess
import sys

import pytest
from click.testing import CliRunner

from backmark.cli import main
from backmark.training.memory import ENV, keep_freed_memory_unless_told

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# In a fresh process (the setting is the process's): allocate, fill and free a 64 MiB tensor (the size of one of
# cifar-fast's activations at batch 256) again and again, as training steps do; count the minor page faults.
PROBE = """
import resource, sys
import torch
from backmark.training.memory import keep_freed_memory, keeps_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
assert keeps_freed_memory() == kept
def step():
    t = torch.empty(16 << 20)  # 64 MiB of float32
    t.fill_(1.0)
    del t
step()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    step()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=120)
    kept, faults = out.stdout.split()
    return kept, int(faults)


@glibc
def test_kept_memory_is_reused_without_page_faults():
    kept, faults = _faults("keep")
    system_kept, system_faults = _faults("system")
    assert (kept, system_kept) == ("True", "False")
    pages = 8 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert system_faults > pages * 3 // 4  # glibc's default: each 64 MiB block is mapped afresh and faulted in page by page
    assert faults <= pages // 8 + 64  # kept: at most one block's pages (the heap growing once); then the same pages serve


def test_the_switch_takes_0_or_1_and_refuses_anything_else():
    assert keep_freed_memory_unless_told({ENV: "0"}) is False
    with pytest.raises(Exception, match="set it to 1 .* or 0"):
        keep_freed_memory_unless_told({ENV: "yes"})
    res = CliRunner().invoke(main, ["info", "--help"], env={ENV: "maybe"})
    assert res.exit_code == 2 and f"{ENV}='maybe'" in res.output and "Traceback" not in res.output
