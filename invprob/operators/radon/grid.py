"""``"grid"``: the matrix-free Radon transform by bilinear ray sampling with ``grid_sample``.

Computes the same ``A`` as the ``"matrix"`` back-end without storing it: the ray samples of a
block of angles are interpolated (bilinear, zero outside the image) and summed along each ray.
``A^T`` is the vector-Jacobian product of that map (autograd's scatter of the bilinear weights),
hence the exact transpose.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import RadonBackend, compute_dtype
from .geometry import ParallelGeometry

GRID_CHUNK_BYTES = 2**28
"""Largest intermediate ray-sample tensor the ``"grid"`` back-end allocates at once."""


class GridBackend(RadonBackend):
    """``"grid"``: matrix-free ray sampling; angle blocks keep the intermediate
    ``(K, A_block * D, M)`` tensor under :data:`GRID_CHUNK_BYTES`.

    Example:
        >>> backend = GridBackend(ParallelGeometry(8, (0.0, 90.0), 8))
        >>> y = backend.project(torch.ones(1, 8, 8, dtype=torch.float64))
        >>> y.shape, float(y[0, 0, 4])  # a central ray at 0 degrees crosses 8 unit pixels
        (torch.Size([1, 2, 8]), 8.0)
    """

    name = "grid"

    def __init__(self, geom: ParallelGeometry) -> None:
        super().__init__(geom)
        u, v = geom.sample_points()
        scale = 2.0 / max(geom.size - 1, 1)
        self._grid64 = torch.from_numpy(np.stack([u * scale - 1.0, v * scale - 1.0], axis=-1))
        self._grids: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _grid(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._grids:
            self._grids[key] = self._grid64.to(device=like.device, dtype=like.dtype)
        return self._grids[key]

    def _blocks(self, k: int, itemsize: int) -> list[slice]:
        per_angle = k * self.geom.n_detectors * self._grid64.shape[2] * itemsize
        step = max(1, GRID_CHUNK_BYTES // max(per_angle, 1))
        return [slice(a, a + step) for a in range(0, self.geom.n_angles, step)]

    def _sample(self, image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        a, d, m, _ = grid.shape
        out = F.grid_sample(image, grid.reshape(1, a * d, m, 2), mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.sum(-1).reshape(image.shape[1], a, d)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(x.dtype)
        image = x.to(dtype).unsqueeze(0)
        grid = self._grid(image)
        parts = [self._sample(image, grid[b]) for b in self._blocks(x.shape[0], image.element_size())]
        return torch.cat(parts, dim=1).to(x.dtype)

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        dtype = compute_dtype(y.dtype)
        k, n = y.shape[0], self.geom.size
        sino = y.to(dtype)
        grid = self._grid(sino)
        out = torch.zeros((k, n, n), dtype=dtype, device=y.device)
        with torch.enable_grad():
            for b in self._blocks(k, sino.element_size()):
                probe = torch.zeros((1, k, n, n), dtype=dtype, device=y.device, requires_grad=True)
                (grad,) = torch.autograd.grad(self._sample(probe, grid[b]), probe, sino[:, b])
                out += grad[0]
        return out.to(y.dtype)
