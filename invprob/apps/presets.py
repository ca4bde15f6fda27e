"""Named configurations of :func:`invprob.apps.bench.run` (``invprob bench --preset NAME``).

Kept free of heavy imports, so that the command line can list the presets in ``--help`` without
loading torch.

References: K. Kothari, A. Khorashadizadeh, M. de Hoop, I. Dokmanić (2021), "Trumpets: Injective
Flows for Inference and Inverse Problems" (Table 3: the ``table3`` preset and its reference SNRs).

Example:
    >>> PRESETS["table3"].settings["operators"]
    'gauss:250,drop:0.15,keep:0.15,sr:4,block:12,block:16'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAP_METHODS = ("pinv", "tv", "csgm", "dip", "iflow", "iflow-l")

#: The shipped prior of the demo, ``invprob solve`` and ``invprob bench``, and the dataset it was trained on.
DEFAULT_PRIOR, DEFAULT_DATASET = "trumpet-mnist", "mnist"

#: Test images of the demo: two (the demo's time is mostly CSGM, iFlow and iFlow-L, about 20 s each on one core).
DEMO_N_IMAGES = 2

#: The settings of a run without a preset.
DEFAULTS: dict[str, Any] = {
    "prior": DEFAULT_PRIOR,
    "dataset": DEFAULT_DATASET,
    "split": "test",
    "n_images": 4,
    "operators": "gauss:250,randmask:0.15,sr:4,block:12",
    "methods": ",".join(MAP_METHODS),
    "snr_db": 30.0,
}


@dataclass(frozen=True)
class Preset:
    """A named benchmark configuration: ``settings`` replace :data:`DEFAULTS` key by key.

    ``reference`` (optional) holds published SNRs to print beside the measured ones:
    ``rows`` maps an operator spec to the paper's row name, ``columns`` a paper column to a method
    label, ``values`` a paper row to ``{column: SNR dB}``.
    """

    name: str
    description: str
    settings: dict[str, Any]
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: dict[str, Any] | None = None


#: Table 3 of Kothari et al. (2021), MNIST rows: SNR in dB of each method.
TABLE3_PAPER: dict[str, dict[str, float]] = {
    "RandGauss": {"CSGM": 11.32, "DIP": 12.72, "iFlow": 21.34, "iFlow-L": 21.81},
    "RandMask": {"CSGM": 3.85, "DIP": 4.94, "iFlow": 4.76, "iFlow-L": 10.10},
    "SR×4": {"CSGM": 5.943, "DIP": 1.0, "iFlow": 9.851, "iFlow-L": 12.75},
    "Mask": {"CSGM": 3.34, "DIP": 4.38, "iFlow": 3.90, "iFlow-L": 9.54},
}

PRESETS: dict[str, Preset] = {
    "table3": Preset(
        name="table3",
        description=(
            "Table 3 of Kothari et al. (2021), MNIST: trumpet-mnist on 200 test digits at 30 dB SNR; "
            "RandGauss m=250 (gauss:250), random mask p=0.15 both dropping (drop:0.15, the paper's text) "
            "and keeping (keep:0.15, the reference code) pixels with probability p, x4 super-resolution, centred "
            "square holes of 12 and 16 pixels; iFlow and iFlow-L (stopping tolerance 1e-4 over 25 iterations), CSGM (10 restarts, each run to the cap), DIP on the prior's "
            "generator (dip-prior, the paper's DIP) and on Ulyanov's hourglass (dip-hourglass)"
        ),
        settings={
            "prior": "trumpet-mnist",
            "dataset": "mnist",
            "split": "test",
            "n_images": 200,
            "operators": "gauss:250,drop:0.15,keep:0.15,sr:4,block:12,block:16",
            "methods": "iflow,iflow-l,csgm,dip-prior=dip,dip-hourglass=dip",
            "snr_db": 30.0,
        },
        method_options={"csgm": {"restarts": 10, "screen": 0}, "iflow": {"tol": 1e-4}, "iflow-l": {"tol": 1e-4, "window": 25},
                        "dip-prior": {"network": "prior"}, "dip-hourglass": {"network": "hourglass"}},
        reference={
            "title": "Kothari et al. (2021), Trumpets, Table 3 (MNIST)",
            "rows": {"gauss:250": "RandGauss", "drop:0.15": "RandMask", "keep:0.15": "RandMask",
                     "sr:4": "SR×4", "block:12": "Mask", "block:16": "Mask"},
            "columns": {"CSGM": "csgm", "DIP": "dip-prior", "iFlow": "iflow", "iFlow-L": "iflow-l"},
            "values": TABLE3_PAPER,
        },
    ),
}
