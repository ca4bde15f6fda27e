"""Training on several processes with ``torchrun`` and :class:`~torch.nn.parallel.DistributedDataParallel`.

:func:`setup` reads the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) and starts the default process group once: ``nccl`` when CUDA is
available (rank ``r`` on ``cuda:LOCAL_RANK``), ``gloo`` on CPU. Without ``torchrun``
(``WORLD_SIZE`` unset or 1) nothing is started and every helper is the one-process identity, so
plain training is unchanged. :func:`invprob.training.fit` is the only caller of
:func:`trainable`, the one place where one process and many differ; see its module docstring for
the data sharding and the equivalence condition.

Example:
    >>> world = setup()  # no torchrun here: one process
    >>> world.size, world.rank, world.is_main
    (1, 0, True)
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (nothing on one process)."""
        if self.size > 1:
            dist.barrier()

    def average(self, values: dict[str, Any]) -> dict[str, Any]:
        """Means over the ranks of the scalars ``values`` (``"loss"`` first), plus ``"_per_rank_loss"``.

        One ``all_gather`` per call; on one process the values are returned as floats unchanged.
        """
        if self.size == 1:
            out = {k: float(v) for k, v in values.items()}
            out["_per_rank_loss"] = [out["loss"]]
            return out
        keys = list(values)
        local = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        gathered = [torch.empty_like(local) for _ in range(self.size)]
        dist.all_gather(gathered, local)
        table = torch.stack(gathered).cpu()
        out = {k: float(table[:, i].mean()) for i, k in enumerate(keys)}
        out["_per_rank_loss"] = table[:, 0].tolist()
        return out


_CREATED = False


def setup() -> World:
    """The :class:`World` of this process; starts the process group from torchrun's environment once."""
    global _CREATED
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and not (dist.is_available() and dist.is_initialized()):
        return World()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        _CREATED = True
        atexit.register(shutdown)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if dist.get_backend() == "nccl" else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), local, device)


def shutdown() -> None:
    """Destroy the process group if :func:`setup` started it."""
    global _CREATED
    if _CREATED and dist.is_initialized():
        dist.destroy_process_group()
    _CREATED = False


class _Loss(nn.Module):
    """``loss_fn(model, batch, generator[, step])`` as a module, so that DDP wraps the whole loss."""

    def __init__(self, model: nn.Module, loss_fn: Callable[..., Any], pass_step: bool) -> None:
        super().__init__()
        self.model, self.loss_fn, self.pass_step = model, loss_fn, pass_step

    def forward(self, batch: torch.Tensor, generator: torch.Generator, step: int) -> Any:
        if self.pass_step:
            return self.loss_fn(self.model, batch, generator, step)
        return self.loss_fn(self.model, batch, generator)


class Stepper:
    """Computes one step's loss: directly on one process, through DDP on several."""

    def __init__(self, module: _Loss, wrapped: nn.Module, world: World) -> None:
        self.module, self.wrapped, self.world = module, wrapped, world

    def __call__(self, batch: torch.Tensor, generator: torch.Generator, step: int) -> Any:
        return self.wrapped(batch, generator, step)

    def initialize(self, global_batch: Callable[[], torch.Tensor], generator: torch.Generator) -> None:
        """On several ranks, run data-dependent initialisations on the whole first global batch (see :mod:`.loop`)."""
        if self.world.size > 1 and _uninitialised(self.module.model):
            with torch.no_grad():
                self.module(global_batch(), generator, 0)


def _uninitialised(model: nn.Module) -> bool:
    return any(name.endswith("initialized") and not bool(buf.all()) for name, buf in model.named_buffers())


@contextlib.contextmanager
def trainable(
    model: nn.Module, loss_fn: Callable[..., Any], params: list[nn.Parameter], pass_step: bool, world: World
) -> Iterator[Stepper]:
    """Freeze the parameters not in ``params`` and yield the :class:`Stepper` of this world; restore on exit."""
    chosen = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    for p in frozen:
        p.requires_grad_(False)
    try:
        module = _Loss(model, loss_fn, pass_step)
        wrapped: nn.Module = module
        if world.size > 1:
            ids = [world.device.index] if world.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False)
        yield Stepper(module, wrapped, world)
    finally:
        for p in frozen:
            p.requires_grad_(True)
