"""Revnet steps: actnorm + 1x1 convolution + affine coupling (Glow), bijective or injective.

References: Kingma, Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions";
Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for Inference and
Inverse Problems" (sec. 2).
"""

from __future__ import annotations

from torch import nn

from .actnorm import ActNorm
from .base import FlowSequence
from .conv1x1 import InvertibleConv1x1
from .coupling import AffineCoupling, Mask
from .injective import InjectiveConv1x1, Variant


class RevNetStep(FlowSequence):
    """Bijective revnet step on ``channels`` channels (Glow's three operations).

    Normalising order (``inverse``): actnorm, invertible 1x1 convolution, affine coupling; the
    generative order (``forward``) is the reverse. ``flip`` alternates the coupling halves; a
    single channel always uses the checkerboard mask.

    Example:
        >>> import torch
        >>> step = RevNetStep(2, 4, hidden=4, depth=1)
        >>> x = torch.randn(3, 2, 4, 4)
        >>> y, _ = step(x)
        >>> torch.allclose(step.inverse(y)[0], x, atol=1e-4)
        True
    """

    def __init__(
        self,
        channels: int,
        spatial: int,
        *,
        hidden: int = 32,
        depth: int = 2,
        flip: bool = False,
        mask: Mask = "channel",
    ) -> None:
        super().__init__(
            [
                AffineCoupling(channels, spatial, mask=_mask(channels, mask), flip=flip, hidden=hidden, depth=depth),
                InvertibleConv1x1(channels),
                ActNorm(channels),
            ]
        )


class InjectiveRevNetStep(FlowSequence):
    """Injective revnet step ``c -> expansion * c`` channels (Kothari et al. 2021, sec. 2.1).

    Generative order: affine coupling and actnorm on ``c`` channels, then the injective 1x1
    convolution (:class:`InjectiveConv1x1`, variant ``"linear"`` or ``"relu"``, pseudo-inverse
    regularised by ``gamma``). With the expansion last, ``J = (I (x) W) J_b`` with ``J_b`` square,
    so the summed log-det ``(HW/2) log det(W^T W) + log|det J_b|`` is exactly
    ``(1/2) log det(J^T J)`` of the whole step (a bijective layer *after* the expansion would
    break this, see :class:`invprob.priors.TRUMPET`). ``inverse`` is a left inverse on the range.
    The coupling splits the channels, or the pixels (checkerboard) when there is one channel.
    """

    def __init__(
        self,
        channels: int,
        spatial: int,
        *,
        expansion: int = 2,
        variant: Variant = "linear",
        gamma: float = 1e-3,
        hidden: int = 32,
        depth: int = 2,
        flip: bool = False,
    ) -> None:
        super().__init__(
            [
                AffineCoupling(channels, spatial, mask=_mask(channels), flip=flip, hidden=hidden, depth=depth),
                ActNorm(channels),
                InjectiveConv1x1(channels, expansion=expansion, variant=variant, gamma=gamma),
            ]
        )


def latent_flow_layers(latent_dim: int, n_steps: int, hidden: int) -> list[nn.Module]:
    """A bijective flow on latent vectors viewed as ``(latent_dim, 1, 1)`` tensors (TRUMPET, NIF).

    ``n_steps`` revnet steps with ``hidden``-wide 1x1 conditioners (``depth=0``), alternating
    coupling halves; a one-dimensional latent has no halves to couple, so it gets a single
    actnorm instead (none when ``n_steps == 0``).
    """
    if latent_dim == 1:
        return [ActNorm(1)] if n_steps else []
    return [RevNetStep(latent_dim, 1, hidden=hidden, depth=0, flip=bool(i % 2)) for i in range(n_steps)]


def _mask(channels: int, preferred: Mask = "channel") -> Mask:
    return "checkerboard" if channels == 1 else preferred
