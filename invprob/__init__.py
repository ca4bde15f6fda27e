"""invprob: imaging inverse problems with generative priors.

Recover an image ``x`` from ``y = A(x) + noise`` with a pretrained generative prior, as a MAP
estimate or as posterior samples.
"""

from . import operators

__version__ = "0.1.0"

__all__ = ["operators", "__version__"]
