"""Deep Image Prior: fit an untrained network's weights to the measurement.

A baseline of Kothari et al. (2021, sec. 4.2): ``x_hat = f_theta_hat(z)`` with ``z`` random and fixed and

    theta_hat = argmin_theta ||y - A f_theta(z)||_2^2,

regularised only by stopping early. Two generators ``f_theta``:

- ``network="hourglass"`` (default): an untrained convolutional encoder-decoder with skip
  connections built here (:class:`Hourglass`), fed a fixed uniform-noise image;
- ``network="prior"``: the prior's own decoder, its weights optimised from their trained values
  with ``z`` drawn once from the prior's latent distribution -- the paper's like-for-like
  comparison. The prior is deep-copied; the user's prior is never modified.

Stopping: after ``iterations`` steps (the reference code: 800 Adam steps), or earlier, once the
data fit reaches the noise level (the discrepancy principle ``||y - A x||^2 <= tau^2 * m * sigma^2``,
``m`` the number of measurements). That early stop is on whenever ``sigma`` is given
(``stop_at_noise=None``, the default); ``stop_at_noise=False`` runs the whole budget.

References:
    Ulyanov, Vedaldi, Lempitsky (2018), "Deep Image Prior".
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from ..operators.base import Operator
from ..priors.base import Prior
from ..rng import rand
from ._common import IterativeOptions, NoiseLevel, make_optimizer, squared_residual
from .base import Callback, Result, Solver, check_prior, register, sigma_per_sample
from .driver import iterate

_LEAK = 0.2


class DIPOptions(IterativeOptions):
    """Options of ``"dip"``."""

    network: Literal["hourglass", "prior"] = Field("hourglass", description="which generator's weights are fitted")
    iterations: int = Field(800, ge=1, le=1_000_000, description="step budget (the early stop)")
    lr: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="step size; None: 1e-2 for the hourglass, 1e-3 for the prior"
    )
    channels: int = Field(32, ge=1, le=1024, description="hourglass feature channels at every level")
    depth: int = Field(3, ge=1, le=8, description="hourglass downsampling levels (capped so the coarsest is >= 2x2)")
    skip_channels: int = Field(4, ge=0, le=1024, description="hourglass skip-connection channels (0: no skips)")
    input_channels: int = Field(32, ge=1, le=1024, description="channels of the fixed noise input")
    input_scale: float = Field(0.1, gt=0, allow_inf_nan=False, description="the noise input is uniform on [0, input_scale)")
    stop_at_noise: bool | None = Field(
        None, description="stop once ||y - A x||^2 <= tau^2 m sigma^2 (the discrepancy principle); None: when sigma is given"
    )
    sigma: NoiseLevel = Field(None, description="noise std (one, or one per batch element) for stop_at_noise")
    tau: float = Field(1.0, gt=0, allow_inf_nan=False, description="discrepancy-principle safety factor")

    @model_validator(mode="after")
    def _noise_stop_needs_sigma(self) -> DIPOptions:
        if self.stop_at_noise and self.sigma is None:
            raise ValueError("stop_at_noise=True needs sigma (the noise standard deviation)")
        return self

    @property
    def step_size(self) -> float:
        """The learning rate actually used."""
        if self.lr is not None:
            return self.lr
        return 1e-2 if self.network == "hourglass" else 1e-3


@register
class DeepImagePrior(Solver):
    """Fit a generator's weights to ``y`` from a fixed input; one independent fit per batch element.

    Every batch element starts from the same network weights and input (both drawn from one seed
    taken from ``generator``), so a batch gives the same answer as its elements solved one by one.
    All elements advance together through :func:`iterate` (one step of every unfinished element per
    iteration); ``history`` is averaged over the batch (an element that stopped early repeats its
    last value) and ``extras["iterations"]`` holds the steps each element ran.
    """

    name = "dip"
    kind = "baseline"
    Options = DIPOptions
    needs_prior = False
    description = "Deep Image Prior: fit an untrained conv net (or the prior's decoder) to y, stop early"
    references = "Ulyanov, Vedaldi, Lempitsky (2018), Deep Image Prior"

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
        if x_init is not None:
            raise ValueError("dip: x_init is not used (the network input is random); leave it out")
        if opts.network == "prior":
            check_prior(op, prior, self.name, needs_project=False)
        elif len(op.in_shape) != 3:
            raise ValueError(f"dip: the hourglass network needs images (C, H, W), the operator's in_shape is {op.in_shape}")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        batch = y.shape[0]
        models = [self._generator(op, prior, y, seed) for _ in range(batch)]
        optimizers = [make_optimizer(opts.optimizer, m.parameters(), opts.step_size) for m in models]
        thresholds = self._thresholds(op, y)
        outputs = [torch.empty(0)] * batch
        fits = torch.full((batch,), torch.inf, dtype=y.dtype, device=y.device)
        steps = torch.zeros(batch, dtype=torch.long)

        def step(it: int, active: torch.Tensor) -> dict[str, torch.Tensor]:
            for b in torch.nonzero(active).flatten().tolist():
                x = models[b]()
                fit = squared_residual(op, x, y[b : b + 1])
                outputs[b], fits[b] = x.detach(), fit.detach()[0]
                steps[b] += 1
                if bool(torch.isfinite(fit).all()) and not _reached(fits[b], thresholds[b]):
                    optimizers[b].zero_grad(set_to_none=True)
                    fit.sum().backward()
                    optimizers[b].step()
            return {"loss": fits.clone(), "data_fit": fits.clone()}

        trace = iterate(self.name, opts.iterations, step, batch=batch, estimate=lambda: torch.cat(outputs),
                        callback=callback, progress=opts.progress, stopping=_Discrepancy(thresholds))
        return Result(
            x_hat=torch.cat(outputs),
            method=self.name,
            options=opts,
            history=trace.history,
            extras={"iterations": steps, "stopped_by": trace.stopped_by},
        )

    def _thresholds(self, op: Operator, y: torch.Tensor) -> list[float | None]:
        """Per-element stopping level ``tau^2 m sigma^2`` of the data fit, or None (fixed budget)."""
        opts = self.options
        sigma = sigma_per_sample(opts.sigma, y)
        if opts.stop_at_noise is False or sigma is None:
            return [None] * y.shape[0]
        m = math.prod(op.out_shape)
        return [float(opts.tau**2 * m * s**2) for s in sigma]

    def _generator(self, op: Operator, prior: Prior | None, y: torch.Tensor, seed: int) -> _FixedInputGenerator:
        opts = self.options
        gen = torch.Generator().manual_seed(seed)
        if opts.network == "prior":
            return _FixedInputGenerator.from_prior(prior, gen)
        net = Hourglass(op.in_shape, opts.channels, opts.depth, opts.skip_channels, opts.input_channels, gen)
        noise = opts.input_scale * rand((1, opts.input_channels, *op.in_shape[1:]), like=y, generator=gen)
        return _FixedInputGenerator(net.to(device=y.device, dtype=y.dtype), noise)


def _reached(fit: torch.Tensor, threshold: float | None) -> bool:
    return threshold is not None and float(fit) <= threshold


class _Discrepancy:
    """Stopping rule of the discrepancy principle: an image stops once its data fit reaches its threshold."""

    def __init__(self, thresholds: list[float | None]) -> None:
        self.thresholds = thresholds
        self.converged = torch.zeros(len(thresholds), dtype=torch.bool)

    def update(self, fit: torch.Tensor) -> torch.Tensor:
        for b, threshold in enumerate(self.thresholds):
            self.converged[b] |= _reached(fit[b], threshold)
        return self.converged


class _FixedInputGenerator(nn.Module):
    """``theta -> f_theta(z)`` for a fixed input ``z`` (a buffer, never optimised)."""

    def __init__(self, net: nn.Module, z: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("z", z)

    @classmethod
    def from_prior(cls, prior: Prior, generator: torch.Generator) -> _FixedInputGenerator:
        """The prior's decoder on a deep copy with trainable weights, at one latent draw."""
        clone = copy.deepcopy(prior).requires_grad_(True)
        if not any(True for _ in clone.parameters()):
            raise ValueError(f"dip: network='prior' needs a prior with weights; {type(prior).__name__} has none")
        z = clone.sample_latent(1, 1.0, generator).detach()
        return cls(_Decoder(clone), z)

    def forward(self) -> torch.Tensor:
        return self.net(self.z)


class _Decoder(nn.Module):
    """A prior's ``decode`` as a module, so that its weights are this module's parameters."""

    def __init__(self, prior: Prior) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.decode(z)


class Hourglass(nn.Module):
    """The untrained encoder-decoder of Deep Image Prior, sized for ``image_shape = (C, H, W)``.

    Level ``i`` halves the resolution with a strided 3x3 convolution and refines with another;
    the decoder upsamples bilinearly back to each level's size, concatenates a 1x1-convolution skip
    branch of that level's input, and refines with a 3x3 and a 1x1 convolution; a final 1x1
    convolution maps to ``C`` channels (linear output). Every convolution but the last is followed
    by batch normalisation and a leaky ReLU; 3x3 convolutions pad by reflection. ``depth`` is
    capped so that the coarsest level keeps at least 2x2 pixels. Weights are initialised from
    ``generator`` (PyTorch's default scheme), so the same seed gives the same network.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: int,
        depth: int,
        skip_channels: int,
        input_channels: int,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        out_channels, height, width = image_shape
        levels = max(1, min(depth, _max_levels(min(height, width))))
        self.down = nn.ModuleList()
        self.skips = nn.ModuleList()
        self.up = nn.ModuleList()
        previous = input_channels
        for _ in range(levels):
            self.skips.append(_block(previous, skip_channels, 1) if skip_channels else nn.Identity())
            self.down.append(nn.Sequential(_block(previous, channels, 3, stride=2), _block(channels, channels, 3)))
            self.up.append(nn.Sequential(_block(channels + skip_channels, channels, 3), _block(channels, channels, 1)))
            previous = channels
        self.head = nn.Conv2d(channels, out_channels, 1)
        self.skip_channels = skip_channels
        _initialise(self, generator)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        skips, h = [], z
        for skip, down in zip(self.skips, self.down, strict=True):
            skips.append(skip(h))
            h = down(h)
        for skip_out, up in zip(reversed(skips), reversed(self.up), strict=True):
            h = F.interpolate(h, size=skip_out.shape[-2:], mode="bilinear", align_corners=False)
            if self.skip_channels:
                h = torch.cat([h, skip_out], dim=1)
            h = up(h)
        return self.head(h)


def _block(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    pad_mode = "reflect" if kernel > 1 else "zeros"
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, padding_mode=pad_mode)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.LeakyReLU(_LEAK))


def _max_levels(side: int) -> int:
    """Number of stride-2 halvings (rounding up) that keep the side >= 2."""
    levels = 0
    while side >= 4:
        side = (side + 1) // 2
        levels += 1
    return levels


def _initialise(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default convolution initialisation, drawn from ``generator``."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            fan_in = layer.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            with torch.no_grad():
                layer.bias.uniform_(-bound, bound, generator=generator)
