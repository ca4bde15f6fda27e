"""Importing this module registers every built-in method."""

from . import baselines  # noqa: F401
from . import csgm, dip, iflow  # noqa: F401
from . import variational  # noqa: F401
from . import mcmc  # noqa: F401
