"""Super-resolution: block averaging by an integer factor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import as_image_shape, check_int
from .base import LinearOperator


class SuperResolution(LinearOperator):
    """Average non-overlapping ``factor x factor`` blocks: ``(A x)_ij = mean of block (i, j)``.

    ``A^T y`` replicates every low-resolution pixel over its block and divides by ``factor**2``
    (the exact transpose). Since ``A A^T = I / factor**2``, the pseudo-inverse is
    ``A^+ = factor**2 A^T``, i.e. plain replication. The TRUMPETs paper uses factor 4 on 32 x 32
    MNIST (its reference code downsamples by an antialiased resize instead).

    References: K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets:
    Injective Flows for Inference and Inverse Problems".

    Example:
        >>> op = SuperResolution((1, 4, 4), 2)
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> op(x).tolist()
        [[[[2.5, 4.5], [10.5, 12.5]]]]
        >>> op.pinv(op(x))[0, 0, 0].tolist()
        [2.5, 2.5, 4.5, 4.5]
    """

    def __init__(self, in_shape: tuple[int, int, int], factor: int) -> None:
        in_shape = as_image_shape(in_shape)
        factor = check_int(factor, "factor", minimum=1)
        c, h, w = in_shape
        if h % factor or w % factor:
            raise ValueError(f"factor: {factor} does not divide the image size {h}x{w}")
        super().__init__(in_shape, (c, h // factor, w // factor))
        self.factor = factor

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.factor)

    def _replicate(self, y: torch.Tensor) -> torch.Tensor:
        return y.repeat_interleave(self.factor, dim=-2).repeat_interleave(self.factor, dim=-1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._replicate(y) / self.factor**2

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        return self._replicate(y)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, factor={self.factor}"
