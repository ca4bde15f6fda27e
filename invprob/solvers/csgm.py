"""CSGM: compressed sensing with a generative model (Bora et al., 2017), with random restarts.

The TRUMPET paper's baseline (sec. 4.2): ``x_hat = f(z_hat)`` with

    z_hat = argmin_z ||y - A f(z)||_2^2 + lam ||z||_2^2,

minimised by gradient steps from ``restarts`` random starts drawn from the prior's latent
distribution; for each measurement the restart with the smallest final data fit
``||y - A f(z)||^2`` wins (the paper reports the best of 10 restarts; the reference code uses Adam
with lr 1e-3). The paper's CSGM has ``lam = 0``, the default here.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..operators.base import Operator
from ..priors.base import Prior
from ._common import IterativeOptions, check_iterate, make_optimizer, notify, progress_bar, record, squared_residual
from .base import Callback, Result, Solver, check_loss, register


class CSGMOptions(IterativeOptions):
    """Options of ``"csgm"``."""

    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="step size of the optimizer on z")
    restarts: int = Field(10, ge=1, le=1000, description="random starts; the best data fit wins")
    lam: float = Field(0.0, ge=0, allow_inf_nan=False, description="weight of ||z||^2")


@register
class CSGM(Solver):
    """Latent-space least squares from several random starts; keeps the best data fit per measurement.

    All restarts of all batch elements are optimised together as one ``(B * R, d)`` latent batch;
    every batch element starts from the same ``R`` latents (drawn with ``generator``), so a batch
    gives the same answer as its elements solved one by one with the same seed. With ``x_init``
    the first restart starts at ``prior.encode(x_init)`` instead. ``extras``: ``latent`` (the
    winning ``z``, ``(B, d)``), ``restart_data_fit`` (``(B, R)``), ``best_restart`` (``(B,)``).
    """

    name = "csgm"
    Options = CSGMOptions
    description = "latent least squares ||y - A f(z)||^2 + lam ||z||^2 with random restarts (Bora et al.)"

    def run(
        self,
        op: Operator,
        prior: Prior | None,
        y: torch.Tensor,
        *,
        x_init: torch.Tensor | None,
        callback: Callback | None,
        generator: torch.Generator | None,
    ) -> Result:
        opts = self.options
        batch, restarts = y.shape[0], opts.restarts
        z = self._starts(prior, batch, x_init, generator).requires_grad_(True)
        targets = y.repeat_interleave(restarts, dim=0)
        optimizer = make_optimizer(opts.optimizer, [z], opts.lr)
        history: dict[str, list[float]] = {}
        with progress_bar(opts.iterations, self.name, opts.progress) as bar:
            for it in range(opts.iterations):
                x, fit, loss = self._objective(op, prior, targets, z)
                check_loss(loss, it, self.name)
                (z.grad,) = torch.autograd.grad(loss.sum(), z)
                optimizer.step()
                check_iterate(z, it, self.name)
                best = fit.view(batch, restarts).argmin(1)
                info = record(history, loss=_pick(loss, best, restarts), data_fit=_pick(fit, best, restarts))
                bar.update()
                if notify(callback, it, _pick(x, best, restarts), info):
                    break
        with torch.no_grad():
            x, fit, _ = self._objective(op, prior, targets, z)
        restart_fit = fit.view(batch, restarts)
        best = restart_fit.argmin(1)
        extras = {"latent": _pick(z.detach(), best, restarts), "restart_data_fit": restart_fit, "best_restart": best}
        return Result(x_hat=_pick(x, best, restarts), method=self.name, options=opts, history=history, extras=extras)

    def _starts(
        self, prior: Prior, batch: int, x_init: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``(B * R, d)`` starting latents: the same ``R`` prior draws for every batch element."""
        restarts = self.options.restarts
        draws = prior.sample_latent(restarts, 1.0, generator)
        starts = draws.unsqueeze(0).repeat(batch, 1, 1)
        if x_init is not None:
            with torch.no_grad():
                starts[:, 0] = prior.encode(x_init)
        return starts.reshape(batch * restarts, prior.latent_dim).detach()

    def _objective(
        self, op: Operator, prior: Prior, targets: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``f(z)``, ``||y - A f(z)||^2`` and ``||y - A f(z)||^2 + lam ||z||^2`` per latent."""
        x = prior.decode(z)
        fit = squared_residual(op, x, targets)
        return x, fit, fit + self.options.lam * z.pow(2).sum(1)


def _pick(values: torch.Tensor, best: torch.Tensor, restarts: int) -> torch.Tensor:
    """Row ``best[b]`` of each group of ``restarts`` consecutive rows of ``values``."""
    grouped = values.detach().reshape(best.shape[0], restarts, *values.shape[1:])
    return grouped[torch.arange(best.shape[0], device=best.device), best]
