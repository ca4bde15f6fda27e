"""``"torch-radon"``: an adapter to torch-radon's ``Radon`` projector (imported only when used).

torch-radon's ``Radon(resolution, angles, det_count)`` takes angles in radians; its ``forward`` is
the projection and its ``backprojection`` the transpose, which the operator's autograd uses.
Angles (converted to radians) and ``det_count`` are passed straight through and sinograms keep
the ``(n_angles, det_count)`` layout of :mod:`.geometry`; torch-radon's own discretisation,
angle origin and rotation centre are kept as they are, so compare its sinograms with
``backend="matrix"`` once before mixing the two. The adapter is tested against a stand-in with
the same API (the package itself needs CUDA).

References: M. Ronchetti (2020), "TorchRadon: Fast Differentiable Routines for Computed
Tomography".
"""

from __future__ import annotations

import numpy as np
import torch

from ._optional import import_torch_radon
from .base import RadonBackend
from .geometry import ParallelGeometry


class TorchRadonBackend(RadonBackend):
    """``"torch-radon"``: projection and back-projection by torch-radon (see the module).

    Used through ``LimitedAngleCT(in_shape, backend="torch-radon")`` (it needs the CUDA-only
    package, so it has no doctest here; ``tests/test_ct.py`` runs it against a stand-in).
    """

    name = "torch-radon"

    def __init__(self, geom: ParallelGeometry) -> None:
        super().__init__(geom)
        module = import_torch_radon()
        angles = np.deg2rad(np.asarray(geom.angles, dtype=np.float64))
        self.radon = module.Radon(geom.size, angles, det_count=geom.n_detectors)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.radon.forward(x.contiguous())

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        return self.radon.backprojection(y.contiguous())
