"""Flow layers (generative ``forward``, exact or pseudo-``inverse``, per-sample log-det in both).

See :mod:`invprob.priors.layers.base` for the convention every layer follows.
"""

from .actnorm import ActNorm
from .base import FlowLayer, FlowSequence
from .conv1x1 import InvertibleConv1x1
from .coupling import AffineCoupling, bounded_scale
from .injective import InjectiveConv1x1
from .linear import ConditionalAffine, LULinear, soft_clamp
from .mlp import ResidualMLP
from .revnet import InjectiveRevNetStep, RevNetStep, latent_flow_layers
from .squeeze import Squeeze, Upsqueeze, squeeze, upsqueeze
from .unet import SmallUNet

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "ConditionalAffine",
    "FlowLayer",
    "FlowSequence",
    "InjectiveConv1x1",
    "InjectiveRevNetStep",
    "InvertibleConv1x1",
    "LULinear",
    "ResidualMLP",
    "RevNetStep",
    "SmallUNet",
    "Squeeze",
    "Upsqueeze",
    "bounded_scale",
    "latent_flow_layers",
    "soft_clamp",
    "squeeze",
    "upsqueeze",
]
