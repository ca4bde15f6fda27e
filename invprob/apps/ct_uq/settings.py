"""Settings of the CT workflow: defaults, parsing of command-line values, validation, sampler options."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ... import uq
from ..._checks import check_float, check_int
from ...operators.ct import default_angles

DEFAULT_PRIOR = "trumpet-ellipses"
DEFAULT_LEVELS = uq.DEFAULT_LEVELS
SAMPLERS = ("svi", "langevin", "pl-mcmc")
MAP_METHOD = "iflow-l"
MAP_OPTIONS: dict[str, Any] = {"iterations": 30, "tol": 1e-4, "window": 25}
"""The workflow's MAP: iFlow-L (``iflow-l``, its defaults but a cap of 30 iterations and the
stopping rule tolerance 1e-4 over 25 iterations; ``map_options`` override them), i.e.
``v_hat = argmin_{v = P(v)} 1/2 ||y - A v||^2 - sigma^2 log p_{Z'}(g^dagger(v))`` with the known
``sigma``, by projected Adam steps on the prior's range, started at the projection of a TV
reconstruction (:data:`MAP_START_TV`)."""
MAP_START_TV = 4.0
"""The MAP's start is ``P(clip(x_TV))``, the prior's projection of a total-variation reconstruction
``x_TV = argmin_x 1/2 ||A x - y||^2 + beta sigma^2 TV(x)`` with ``beta = MAP_START_TV``. The TV
weight scales with the noise variance, as in a MAP estimate under a TV prior; 4 gives about the
weight 10 that the ct-uq TV baseline picks on calibration ellipses at 30 dB, where sigma^2 is 2.5
on average; it gives a better MAP than the latent posterior's mode, in less time
(benchmarks/BENCHMARKS.md, section "CT MAP: a TV start"). ``map_options={"start": ...}`` uses
iFlow-L's own start instead; ``map_options={"start_tv": beta}`` changes ``beta``."""
MAP_DEFAULTS: dict[str, Any] = {"options": MAP_OPTIONS, "start_tv": MAP_START_TV}
"""Every default of the MAP, as recorded in the fingerprints of stages, calibrators and benchmark caches."""
DATA_RANGE = 2.0
"""Span of image values (``[-1, 1]``) used by PSNR and SSIM."""
N_TEST_ELLIPSES = 100
"""Ellipse test phantoms ``0..99`` form the evaluation pool."""
CALIBRATION_OFFSET = N_TEST_ELLIPSES
"""Calibration phantom ``j`` is test-stream ellipse ``100 + j``: never one of the evaluation pool's."""


def parse_angles(text: str) -> np.ndarray:
    """Angles in degrees from ``"FIRST:LAST:COUNT"`` (``COUNT`` evenly spaced, ends included) or ``"a,b,c"``.

    Example:
        >>> parse_angles("30:150:5").tolist()
        [30.0, 60.0, 90.0, 120.0, 150.0]
    """
    parts = text.split(":")
    try:
        if len(parts) == 1:
            return np.array([float(a) for a in text.split(",") if a.strip()])
        if len(parts) != 3:
            raise ValueError(text)
        first, last, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(
            f"angles: expected FIRST:LAST:COUNT (e.g. 30:150:30) or a comma-separated list, got {text!r}"
        ) from None
    if count < 1:
        raise ValueError(f"angles: COUNT must be at least 1, got {count}")
    return default_angles(count, first, last)


def parse_levels(text: str) -> tuple[float, ...]:
    """Nominal levels from ``"0.5,0.8,0.9"``; a one-line error names the entry that is not a number.

    Example:
        >>> parse_levels("0.5, 0.9")
        (0.5, 0.9)
    """
    levels = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            levels.append(float(item))
        except ValueError:
            raise ValueError(f"levels: expected comma-separated numbers in (0, 1), e.g. 0.5,0.9; got {item.strip()!r} "
                             f"in {text!r}") from None
    if not levels:
        raise ValueError(f"levels: expected at least one number in (0, 1), got {text!r}")
    return tuple(levels)


def check_settings(snr_db: float, sampler: str, n_samples: int, levels: Sequence[float]) -> tuple[float, ...]:
    """Validate the workflow's scalar settings; return the levels as sorted floats.

    ``snr_db`` must be a finite number > 0, ``sampler`` one of :data:`SAMPLERS`, and ``n_samples``
    large enough for the highest level (:func:`invprob.uq.min_samples_for_level`).
    """
    check_float(snr_db, "snr_db", minimum=0, strict=True)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
    n_samples = check_int(n_samples, "n_samples", minimum=2)
    levels = tuple(sorted(set(uq.check_levels(levels, "levels"))))
    needed = uq.min_samples_for_level(max(levels))
    if n_samples < needed:
        raise ValueError(
            f"n_samples: {n_samples} posterior samples are too few for a {max(levels):.0%} central credible interval "
            f"(S samples span at most (S-1)/(S+1) of the posterior); use at least {needed} or lower the levels"
        )
    return levels


def default_sampler_options(
    sampler: str, sigma: float, n_samples: int, user: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Options of the sampler: the workflow's defaults updated by ``user``.

    ``"svi"``: the known ``sigma``, ``n_samples``, 300 Adam steps of 16 Monte Carlo samples (the
    solver's defaults are 1000 of 32: 7x the time for +1.6 dB on a 64x64 phantom, see
    benchmarks/BENCHMARKS.md, section ct-uq), ``beta = 1``, i.e. the plain KL, and the flow started
    as ``N(c, 0.1^2 I)``, ``c`` the prior's encoding of the MAP (``start="x_init"``,
    ``start_scale=0.1``; ``start="prior", start_scale=1`` starts it at the prior). ``"langevin"``: MALA (``adjusted``) with the step adapted
    towards 57 % acceptance during 500 burn-in steps, 4 chains thinned by 10. ``"pl-mcmc"``: the
    solver's defaults with 4 chains. The chain samplers keep ``ceil(n_samples / n_chains)``
    states per chain.

    Example:
        >>> default_sampler_options("langevin", 0.1, 64)["n_samples"]
        16
    """
    user = dict(user or {})
    if "n_samples" in user:
        raise ValueError("sampler_options: give the number of samples as n_samples of the workflow, not as an option")
    if sampler == "svi":
        options = {"sigma": sigma, "n_samples": n_samples, "steps": 300, "batch_size": 16, "start": "x_init", **user}
        if options["start"] == "x_init":
            options.setdefault("start_scale", 0.1)
        return options
    if sampler == "langevin":
        options = {"sigma": sigma, "adjusted": True, "target_acceptance": 0.57, "step_size": 1e-4,
                   "n_chains": 4, "burn_in": 500, "thin": 10, **user}
    else:
        options = {"sigma": sigma, "n_chains": 4, **user}
    options["n_samples"] = math.ceil(n_samples / check_int(options["n_chains"], "n_chains", minimum=1))
    return options


def resolved_sampler_options(sampler: str, n_samples: int, user: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`default_sampler_options` without the noise level: what a run's samples depend on besides
    the measurement (for fingerprints of stages and calibrators).

    Example:
        >>> resolved_sampler_options("svi", 64)["start"]
        'x_init'
    """
    options = default_sampler_options(sampler, 1.0, n_samples, user)
    options.pop("sigma")
    return options
