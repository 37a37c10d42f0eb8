"""Data-parallel training over many processes, GPUs and machines, with PyTorch's own DDP.

Start any command that trains (``train``, ``embed``, the attacks) under torchrun and it
runs data-parallel; nothing else changes::

    torchrun --nproc_per_node=4 -m backmark train --dataset cifar10 --data-dir data/ --out m.safetensors
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 -m backmark train ...

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address; :func:`setup`
reads them, joins the process group (NCCL for GPUs, gloo for CPUs; the environment
variable ``BACKMARK_DIST_BACKEND`` overrides) and gives each rank its own GPU.

How the work is split, so that the recipe stays the single-process one: every rank
holds the whole dataset and draws the same permutation and the same trigger images;
each global batch of B clean images and k triggers is dealt round-robin over the ranks
(:func:`split_batch`), every rank scales its summed loss by W / (B + k), and DDP's
gradient mean over W ranks is then exactly the gradient of the mean loss over the
global batch. BatchNorm statistics are per rank during a step (as in any DDP run) and
averaged over the ranks after each epoch. Rank 0 alone writes files and prints.
"""
from __future__ import annotations

import atexit
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

ENV_BACKEND = "BACKMARK_DIST_BACKEND"
_DDP_HAS_FORWARD_SYNC = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters  # torch >= 2.13


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DDP when there are several ranks (gradients averaged in backward)."""
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers (BatchNorm running stats) are averaged once an epoch by sync_buffers, not broadcast every step.
        no_sync = {"forward_sync_buffers": False} if _DDP_HAS_FORWARD_SYNC else {"broadcast_buffers": False}
        return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True, **no_sync)

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64)."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (any picklable value)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def sync_buffers(self, model: nn.Module) -> None:
        """Average BatchNorm running statistics over the ranks; every other buffer takes rank 0's value."""
        if self.world_size == 1:
            return
        averaged = set()
        for m in model.modules():
            if isinstance(m, _BatchNorm) and m.track_running_stats:
                for buf in (m.running_mean, m.running_var):
                    dist.all_reduce(buf)
                    buf.div_(self.world_size)
                    averaged.add(id(buf))
        for buf in model.buffers():
            if id(buf) not in averaged:
                dist.broadcast(buf, src=0)

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def split_batch(n_clean: int, k: int, rank: int, world_size: int) -> tuple[slice, slice]:
    """This rank's share of a global batch of ``n_clean`` clean images followed by ``k`` triggers.

    Items are dealt round-robin (positions rank, rank + W, ...), so shares differ by at
    most one item and the k triggers are spread over the ranks. Returns the slice of the
    clean images and the slice of the triggers that this rank trains on.
    """
    return slice(rank, n_clean, world_size), slice((rank - n_clean) % world_size, k, world_size)


def setup(device: torch.device | str | None = None) -> Context:
    """Join the process group that torchrun describes (once per process); a single-process Context otherwise.

    Under several ranks a CUDA ``device`` (or none, with CUDA present) becomes
    ``cuda:LOCAL_RANK``: one GPU per process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local, world)
    if world > 1 and not dist.is_initialized():
        backend = os.environ.get(ENV_BACKEND) or ("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, init_method="env://")
        atexit.register(_shutdown)
    if dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), local, dev)
    return Context(0, 1, 0, dev)


def _pick_device(device, local_rank: int, world: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    if world > 1:  # one GPU per rank (more ranks than GPUs share them round-robin; gloo only, NCCL refuses)
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True unless this process is a rank other than 0 (also before the process group is joined)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()

