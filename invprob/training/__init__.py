"""Training loops for the priors: one resumable loop (:func:`fit`), one trainer base, one process or many (torchrun).

Example:
    >>> from invprob.training import TrumpetTrainOptions
    >>> TrumpetTrainOptions().mse_steps
    500
"""

from ..checkpoint import CheckpointError, atomic_write, has_checkpoint, load_checkpoint, save_checkpoint
from .loop import FitOptions, TrainingDiverged, fit

__all__ = [
    "CheckpointError", "FitOptions", "TrainingDiverged", "atomic_write", "fit", "has_checkpoint", "load_checkpoint",
    "save_checkpoint",
]

from .nif import NIFTrainOptions, train_nif
from .relaxed import RelaxedTrainOptions, train_relaxed_flow

__all__ += ["NIFTrainOptions", "RelaxedTrainOptions", "train_nif", "train_relaxed_flow"]

from .common import bits_per_dim
from .priors import FlowTrainOptions, TrumpetTrainOptions, adopt_injective, train_flow, train_trumpet

__all__ += ["FlowTrainOptions", "TrumpetTrainOptions", "adopt_injective", "bits_per_dim", "train_flow", "train_trumpet"]

from .amortized import AmortizedTrainingOptions, train_amortized

__all__ += ["AmortizedTrainingOptions", "train_amortized"]
