"""Limited-angle CT with calibrated uncertainty quantification: :func:`ct_workflow` and ``invprob uq-ct``.

The workflow measures a phantom with :class:`~invprob.operators.LimitedAngleCT` (by default 30
angles in ``[30°, 150°]``, a 60° unmeasured wedge) or takes a measured sinogram, reconstructs it
by FBP and the MAP (iFlow-L from the prior's projection of a TV reconstruction), draws posterior samples, and writes uncertainty maps, the coverage of the
pixel-wise intervals (raw and, with a calibration set, split-conformal calibrated), and a check
that the input is within the prior's reach. Modules:

- :mod:`.settings`: defaults, parsing (``--angles``, ``--levels``), validation, sampler options;
- :mod:`.phantoms`: ground truths (ellipses, Shepp-Logan, pictures, ``.npy``, DICOM), the
  evaluation and the (disjoint) calibration sets;
- :mod:`.reconstruction`: measurement, FBP, MAP and posterior samples of one sinogram;
- :mod:`.maps`: quality metrics, uncertainty maps, data misfit;
- :mod:`.calibrate`: reconstructing a set, coverage reports, fitting the calibrator;
- :mod:`.outputs`: resumable stage files and atomic writes;
- :mod:`.figures`: ``maps.png`` and the reliability diagram;
- :mod:`.workflow`: :func:`ct_workflow`.

References:
    Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for Inference and
    Inverse Problems" (UAI), sec. 4.3, fig. 3; Angelopoulos, Kohli, Bates, Jordan, Malik, Alshaabi,
    Upadhyayula, Romano 2022, "Image-to-image regression with distribution-free uncertainty
    quantification and applications in imaging" (ICML).
"""

from .maps import MAP_KEYS, quality, uq_maps
from .outputs import FILES
from .phantoms import calibration_phantoms, evaluation_phantoms, load_phantom
from .reconstruction import Reconstruction, measure, reconstruct
from .settings import DEFAULT_LEVELS, DEFAULT_PRIOR, SAMPLERS, check_settings, default_sampler_options, parse_angles, parse_levels
from .workflow import SUMMARY_KEYS, CTUQResult, ct_workflow

__all__ = [
    "CTUQResult",
    "DEFAULT_LEVELS",
    "DEFAULT_PRIOR",
    "FILES",
    "MAP_KEYS",
    "Reconstruction",
    "SAMPLERS",
    "SUMMARY_KEYS",
    "calibration_phantoms",
    "check_settings",
    "ct_workflow",
    "default_sampler_options",
    "evaluation_phantoms",
    "load_phantom",
    "measure",
    "parse_angles",
    "parse_levels",
    "quality",
    "reconstruct",
    "uq_maps",
]
