"""The flow-layer convention shared by every layer in this package.

A layer is a map ``y = F(x)`` between image tensors ``(B, C, H, W)`` (or, for the vector layers
:class:`~invprob.priors.layers.LULinear`, :class:`~invprob.priors.layers.ConditionalAffine` and the
MLP-conditioned :class:`~invprob.priors.layers.AffineCoupling`, vectors ``(B, D)``) written in
the *generative* direction (latent side to data side). It provides

- ``forward(x) -> (y, logdet)`` and
- ``inverse(y) -> (x, logdet)``: the exact inverse of a bijective layer, or a left inverse
  (a Tikhonov-regularised pseudo-inverse) of an injective one;

and in **both** directions ``logdet`` is the per-sample volume change of the *forward* map at the
point ``x``, ``(1/2) log det(J_F(x)^T J_F(x))`` of shape ``(B,)``. For a bijective layer this is
``log |det J_F(x)|``. With this single sign convention the change of variables of a composition
``F = F_K o ... o F_1`` reads (Kothari et al. 2021, eq. 1 and 2)

    log p_Y(y) = log p_X(x) - sum_k logdet_k        (exact for bijective layers),

and for injective layers the same sum gives the layer-wise approximation of eq. 6 of Kothari et
al. 2021, "Trumpets: Injective Flows for Inference and Inverse Problems".

A *conditional* layer (``conditional = True``) takes a context as second argument,
``forward(x, context)`` and ``inverse(y, context)``: a vector ``(B, K)`` the map depends on (the
embedded measurement of amortised inference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class FlowLayer(nn.Module):
    """Base class of the flow layers; see the module docstring for the convention."""

    conditional: bool = False

    def from_weight(self, key: str, weight: torch.Tensor, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()``, a function of ``weight`` alone, remembered while ``weight`` is frozen and unchanged.

        A solver holds the prior's weights fixed (see :func:`invprob.solvers.base.frozen`), so a
        layer's log-determinant, inverse or pseudo-inverse of its weight matrix is the same at
        every iteration. While ``weight`` does not require gradients the value is cached (one entry
        inside and one outside inference mode), stamped with the tensor's storage, dtype, device and
        in-place version counter: an optimizer step, ``load_state_dict`` or ``.to()`` misses the
        stamp and recomputes (writes through ``weight.data``, which bypass the version counter, do
        not). A weight that requires gradients is never cached, so training differentiates through it.
        """
        if weight.requires_grad:
            return compute()
        stamp = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cache = self.__dict__.setdefault("_weight_cache", {})
        slot = (key, torch.is_inference_mode_enabled())  # an inference tensor cannot enter a graph later
        hit = cache.get(slot)
        if hit is None or hit[0] != stamp:
            hit = cache[slot] = (stamp, compute())
        return hit[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of the output for an input of shape ``in_shape`` (default: unchanged)."""
        return in_shape


class FlowSequence(FlowLayer):
    """Composition of layers: ``forward`` applies them in order, ``inverse`` in reverse order."""

    def __init__(self, layers: Iterable[FlowLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, logdet = layer(x)
            total = total + logdet
        return x, total

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, logdet = layer.inverse(y)
            total = total + logdet
        return y, total

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        for layer in self.layers:
            in_shape = layer.out_shape(in_shape)
        return in_shape

    def forward_layers(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The output and log-det of every layer along the forward pass (for inspection and tests)."""
        out = []
        for layer in self.layers:
            x, logdet = layer(x)
            out.append((x, logdet))
        return out


def spatial_size(x: torch.Tensor) -> int:
    """Number of pixels ``H * W`` of a ``(B, C, H, W)`` tensor."""
    return x.shape[2] * x.shape[3]
