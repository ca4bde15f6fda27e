"""RealNVP: a multiscale bijective flow prior (Dinh et al. 2017) with an exact log-density.

Train it with :func:`invprob.training.train_flow` (maximum likelihood, eq. 1).

References:
    Dinh, Sohl-Dickstein, Bengio (2017), "Density estimation using Real NVP" (ICLR); Kingma,
    Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions" (ActNorm).

Example:
    >>> import torch
    >>> prior = RealNVP((1, 8, 8), n_scales=1, n_steps=1, hidden=4, unet_depth=1)
    >>> x = torch.rand(2, 1, 8, 8) * 2 - 1
    >>> prior.log_prob(x).shape  # exact change of variables, eq. 1
    torch.Size([2])
    >>> torch.allclose(prior.project(x), x)  # bijective: the projection is the identity
    True
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch

from .._checks import as_image_shape, check_int
from .base import Prior, randn, standard_normal_log_prob
from .layers import ActNorm, AffineCoupling, FlowSequence, Upsqueeze


def _step(channels: int, spatial: int, mask: str, flip: bool, hidden: int, depth: int,
          scale_range: tuple[float, float]) -> FlowSequence:
    """Normalising order: actnorm, then an affine coupling (generative order reversed)."""
    coupling = AffineCoupling(channels, spatial, mask=mask, flip=flip, hidden=hidden, depth=depth, scale_range=scale_range)
    return FlowSequence([coupling, ActNorm(channels)])


class RealNVP(Prior):
    """Multiscale RealNVP ``x = f(z)``, ``z ~ N(0, I_n)``, ``latent_dim = n = prod(data_shape)``.

    Normalising direction, at each of the first ``n_scales - 1`` scales: ``n_steps``
    checkerboard couplings (alternating parity), a squeeze, ``n_steps`` channel couplings
    (alternating halves), then half of the channels are factored out into ``z``; the last scale
    has ``n_steps + 1`` checkerboard couplings. Every coupling (a :class:`SmallUNet` with ``hidden``
    channels and ``unet_depth`` levels, scale bounded in ``scale_range``) follows an actnorm.
    The default range ``(0.5, 2)`` lets each coupling expand or contract by at most 2 in either
    direction; the TRUMPET range ``(0.01, 1)`` made maximum-likelihood training on the digits
    diverge (the normalising direction divides by ``s``, up to 100 per layer: loss 1e25 within
    20 steps at lr 1e-3).

    ``log_prob`` is exact (eq. 1): ``log p(x) = log N(f^{-1}(x); 0, I) - sum_k log|det J_k|``.
    ``encode`` / ``decode`` are exact inverses and ``project`` is the identity.
    """

    log_prob_kind = "exact"
    is_bijective = True

    def __init__(
        self,
        data_shape: tuple[int, int, int],
        *,
        n_scales: int = 2,
        n_steps: int = 3,
        hidden: int = 32,
        unet_depth: int = 1,
        scale_range: tuple[float, float] = (0.5, 2.0),
    ) -> None:
        shape = as_image_shape(data_shape, "data_shape")
        super().__init__(shape, math.prod(shape))
        self._config = {
            "data_shape": list(shape),
            "n_scales": check_int(n_scales, "n_scales", minimum=1),
            "n_steps": check_int(n_steps, "n_steps", minimum=1),
            "hidden": check_int(hidden, "hidden", minimum=1),
            "unet_depth": check_int(unet_depth, "unet_depth", minimum=0),
            "scale_range": [float(v) for v in scale_range],
        }
        step = partial(_step, hidden=hidden, depth=unet_depth, scale_range=self._config["scale_range"])
        c, h, w = shape
        if h % 2 ** (n_scales - 1) or w % 2 ** (n_scales - 1) or min(h, w) < 2**n_scales:
            raise ValueError(f"n_scales: {n_scales} scales need sizes divisible by 2**{n_scales - 1} and >= {2**n_scales}, got {shape}")
        scales, self.scale_shapes = [], []
        for scale in range(n_scales):
            self.scale_shapes.append((c, h, w))
            board = [step(c, h, "checkerboard", bool(i % 2)) for i in range(n_steps + (scale == n_scales - 1))]
            if scale == n_scales - 1:
                scales.append(FlowSequence(reversed(board)))
                break
            channel = [step(4 * c, h // 2, "channel", bool(i % 2)) for i in range(n_steps)]
            scales.append(FlowSequence([*reversed(channel), Upsqueeze(), *reversed(board)]))
            c, h, w = 2 * c, h // 2, w // 2
        self.scales = torch.nn.ModuleList(scales)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def _factored_sizes(self) -> list[int]:
        """Sizes of the pieces of ``z``: what each scale factors out, then the last scale's output."""
        sizes = [math.prod(shape) // 2 for shape in self.scale_shapes[:-1]]
        return [*sizes, math.prod(self.scale_shapes[-1])]

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z = f^{-1}(x)`` (flat) and ``sum_k log|det J_k|`` of the generative layers."""
        pieces, total, h = [], x.new_zeros(x.shape[0]), x
        for scale, flow in enumerate(self.scales):
            h, logdet = flow.inverse(h)
            total = total + logdet
            if scale < len(self.scales) - 1:
                h, out = h.chunk(2, dim=1)
                pieces.append(out.flatten(1))
        pieces.append(h.flatten(1))
        return torch.cat(pieces, dim=1), total

    def generate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x = f(z)`` and ``sum_k log|det J_k|``."""
        pieces = list(z.split(self._factored_sizes(), dim=1))
        total = z.new_zeros(z.shape[0])
        c, h, w = self.scale_shapes[-1]
        x = pieces.pop().reshape(-1, c, h, w)
        for scale in reversed(range(len(self.scales))):
            if scale < len(self.scales) - 1:
                c, h, w = self.scale_shapes[scale]
                x = torch.cat([x, pieces.pop().reshape(-1, 2 * c, h // 2, w // 2)], dim=1)
            x, logdet = self.scales[scale](x)
            total = total + logdet
        return x, total

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generate(z)[0]

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)[0]

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z, logdet = self.normalize(x)
        return standard_normal_log_prob(z) - logdet

    def _latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def sample_latent(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        return temperature * randn(n, self.latent_dim, generator, self)
