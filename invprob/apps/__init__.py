"""Applications built from the library's layers: ``bench`` (every method on every operator),
``demo`` (the quick start) and ``ct_uq`` (limited-angle CT with uncertainty maps).

Each is a thin composition of :mod:`invprob.data`, :mod:`invprob.operators`,
:mod:`invprob.priors`, :mod:`invprob.solvers`, :mod:`invprob.uq` and :mod:`invprob.plots`.
"""
