"""Log-determinants ``log det(J^T J)`` of a map's Jacobian: brute force and stochastic (Algorithm 2).

``fn`` is a batched map ``(B, d) -> (B, ...)`` acting on each row independently (a generator),
``z`` the batch of points. For an injective ``fn`` the Gram matrix ``J^T J`` (``d x d``) is
positive definite and ``(1/2) log det(J^T J)`` is its volume change (Kothari et al. 2021, eq. 2).

References:
    Kothari, Khorashadizadeh, de Hoop, Dokmanić (2021), "Trumpets: Injective Flows for Inference
    and Inverse Problems" (UAI), sec. 3.3 and Algorithm 2 (the stochastic power-series estimator).

Example:
    >>> import torch
    >>> W = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    >>> fn = lambda z: z @ W.T  # J^T J = diag(4, 9): log det = log 36
    >>> round(float(logdet_jtj_exact(fn, torch.zeros(1, 2))[0]), 4)
    3.5835
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Map = Callable[[torch.Tensor], torch.Tensor]


def logdet_jtj_exact(fn: Map, z: torch.Tensor) -> torch.Tensor:
    """``log det(J^T J)`` per row of ``z`` from the full Jacobian (``D x d`` per sample); small models only."""
    out = []
    for row in z.detach():
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None]).flatten(), row)
        out.append(torch.linalg.slogdet(jac.T @ jac)[1])
    return torch.stack(out)


def gram_operator(fn: Map, z: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map ``v -> J(z)^T J(z) v`` (row-wise) from one forward pass of ``fn`` at ``z``.

    ``J^T u`` is a VJP, linear in ``u``; differentiating it with respect to ``u`` along ``v``
    gives ``J v`` (the double-VJP trick), and a second VJP gives ``J^T J v``.
    """
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(z)
        u = torch.zeros_like(y, requires_grad=True)
        (jt_u,) = torch.autograd.grad(y, z, u, create_graph=True)

    def apply(v: torch.Tensor) -> torch.Tensor:
        (jv,) = torch.autograd.grad(jt_u, u, v, retain_graph=True)
        (jtjv,) = torch.autograd.grad(y, z, jv, retain_graph=True)
        return jtjv

    return apply


def largest_gram_eigenvalue(
    gram: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, n_iterations: int = 10
) -> torch.Tensor:
    """Power iteration for ``lambda_max(J^T J)`` per row, starting from ``v`` (``(B, d)``)."""
    for _ in range(n_iterations):
        v = gram(v)
        v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return (v * gram(v)).sum(1)


def logdet_jtj_series(
    fn: Map,
    z: torch.Tensor,
    *,
    n_terms: int = 10,
    n_probes: int = 10,
    n_power_iterations: int = 10,
    beta_factor: float = 0.95,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stochastic ``log det(J^T J)`` per row (paper sec. 3.3, Algorithm 2); returns ``(estimate, stderr)``.

    With ``beta = beta_factor / lambda_max(J^T J)`` (power iteration) and ``A = I - beta J^T J``,

        log det(J^T J) = -d log(beta) - sum_{k>=1} tr(A^k) / k
                       ~ -d log(beta) - mean_v sum_{k=1}^{n_terms} v^T A^k v / k,   v ~ N(0, I),

    each ``A^k v`` costing one JVP and one VJP. The series is truncated after ``n_terms``, which
    biases the estimate upward by ``sum_{k > n_terms} tr(A^k) / k`` (small when ``J^T J`` is well
    conditioned); ``stderr`` is the Monte-Carlo standard error over the ``n_probes`` probes only.
    """
    if min(n_terms, n_probes, n_power_iterations) < 1:
        raise ValueError("n_terms, n_probes and n_power_iterations must be >= 1")
    if not 0 < beta_factor < 2:
        raise ValueError(f"beta_factor: expected a number in (0, 2), got {beta_factor}")
    batch, dim = z.shape
    repeated = z.detach().repeat_interleave(n_probes, dim=0)
    gram = gram_operator(fn, repeated)
    start = torch.randn(repeated.shape, generator=generator, dtype=z.dtype).to(z.device)
    beta = beta_factor / largest_gram_eigenvalue(gram, start, n_power_iterations)
    probes = torch.randn(repeated.shape, generator=generator, dtype=z.dtype).to(z.device)
    w, series = probes, torch.zeros_like(beta)
    for k in range(1, n_terms + 1):
        w = w - beta[:, None] * gram(w)
        series = series + (w * probes).sum(1) / k
    per_probe = (-dim * beta.log() - series).view(batch, n_probes).detach()
    stderr = per_probe.std(1) / math.sqrt(n_probes) if n_probes > 1 else torch.full((batch,), math.inf, dtype=z.dtype)
    return per_probe.mean(1), stderr
