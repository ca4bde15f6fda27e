"""``invprob solve``: reconstruct one image (simulated or given measurement).

Either ``--image`` (a picture, a ``.npy`` array in ``[-1, 1]``, or ``DATASET:INDEX`` for a test
image of a dataset, e.g. ``digits:3``) is measured with ``--operator`` at ``--snr`` dB and
reconstructed -- the truth is then known and every panel of the figure gets its SNR -- or a given
``--measurement`` (``.npy``) is reconstructed. Methods that take a noise level get the simulated
one (or ``--sigma``). Writes ``reconstruction.npz`` (``x_hat``, ``y``, ``pinv``, ``mean``/``std``
for samplers, ``truth`` when known), ``reconstruction.png`` and ``figure.png`` (measurement or
A⁺y, start, reconstruction, posterior std, truth).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from ..apps.presets import DEFAULT_PRIOR
from ._common import key_values

#: Operator kinds of ``--operator`` (kept in step with the operator-spec parser by a test; listed
#: here so that ``--help`` needs no torch import).
OPERATOR_HELP = (
    "gauss:M (random Gaussian, M measurements; default 250), randmask:P or drop:P (each pixel dropped "
    "with probability P; 0.15), keep:P (each pixel kept with probability P; 0.15), sr:F "
    "(super-resolution by block averaging, factor F; 4), block:S (centred S x S hole; 12), bottom "
    "(bottom half unobserved), ct:N (limited-angle CT, N angles in [30°, 150°]; 30)"
)
#: Methods of ``--method`` by kind (checked against ``list_methods(kind)`` by a test).
METHOD_KINDS = {"map": ("iflow-l", "iflow", "csgm"), "posterior": ("svi", "langevin", "pl-mcmc", "ambient-vi", "avi"),
                "baseline": ("pinv", "tv", "dip")}
METHOD_HELP = (
    f"MAP: {', '.join(METHOD_KINDS['map'])}; posterior samplers: {', '.join(METHOD_KINDS['posterior'])}; "
    f"baselines: {', '.join(METHOD_KINDS['baseline'])}. `invprob methods NAME` lists a method's options"
)
#: ``--image`` given as a dataset's test image, e.g. ``digits:3``.
DATASET_IMAGE = re.compile(r"^(?P<name>[a-z][a-z0-9-]*):(?P<index>\d+)$")
#: Warn when a picture is resized by more than this factor (either way).
RESIZE_WARNING = 2.0
#: Warn when the truth's projection error is this many times the prior's typical test error.
FAR_FROM_DATA = 5.0
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def warn(message: str) -> None:
    """One ``invprob: warning: ...`` line on stderr."""
    print(f"invprob: warning: {message}", file=sys.stderr)


def check_device(text: str) -> Any:
    """``torch.device(text)``, or a one-line error naming ``--device``."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device: expected a torch device such as 'cpu' or 'cuda:0', got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {text!r} was asked for, but CUDA is not available on this machine")
    return device


def read_truth(spec: str, shape: tuple[int, ...]) -> tuple[Any, str]:
    """The ``--image`` as a ``shape`` tensor in ``[-1, 1]`` and a description of it for titles."""
    import numpy as np
    import torch

    from ..data import load_dataset, read_image

    path = Path(spec)
    match = DATASET_IMAGE.match(spec)
    if match and not path.exists():
        dataset = load_dataset(match["name"], split="test")
        index = int(match["index"])
        if index >= len(dataset):
            raise ValueError(f"--image: {match['name']!r} has {len(dataset)} test images (0 to {len(dataset) - 1}), got index {index}")
        image = dataset[index]
        if tuple(image.shape) != tuple(shape):
            raise ValueError(f"--image: {match['name']} images have shape {tuple(image.shape)}, the prior expects {tuple(shape)}")
        labels = getattr(dataset, "labels", None)
        label = f" (class {int(labels[index])})" if labels is not None else ""
        return image, f"{match['name']} test image {index}{label}"
    if not path.is_file():
        raise FileNotFoundError(f"--image: no such file {spec!r} (give a PNG/JPEG, a .npy in [-1, 1], or DATASET:INDEX such as digits:3)")
    if path.suffix.lower() == ".npy":
        array = _load_npy(path, "--image")
        if not np.isfinite(array).all():
            raise ValueError(f"--image: {path.name} holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -1.0 - 1e-6 or high > 1.0 + 1e-6:
            raise ValueError(f"--image: {path.name} holds values in [{low:.3g}, {high:.3g}], expected images in [-1, 1] "
                             "(map [0, 1] images by 2x - 1)")
        return read_image(path, shape), path.name
    if path.suffix.lower() in PICTURE_SUFFIXES:
        _warn_resize(path, shape)
    return read_image(path, shape).to(torch.float32), path.name


def _warn_resize(path: Path, shape: tuple[int, ...]) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            width, height = picture.size
    except (OSError, UnidentifiedImageError):
        return  # read_image reports unreadable files
    factor = max(height / shape[1], shape[1] / height, width / shape[2], shape[2] / width)
    if factor > RESIZE_WARNING:
        warn(f"--image: {path.name} is {width}x{height} pixels and is resized to the prior's {shape[2]}x{shape[1]} "
             f"({factor:.0f}x); the prior was trained on {shape[2]}x{shape[1]} images, so expect a poor reconstruction "
             "unless the picture resembles them")


def _load_npy(path: Path, flag: str) -> Any:
    import numpy as np

    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{flag}: cannot read {path.name} as a .npy array (it does not start with the .npy header; "
                             "write it with numpy.save)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"{flag}: {path.name} holds pickled Python objects, which are not loaded (allow_pickle=False); "
                             "save a numeric array with numpy.save") from None
        raise ValueError(f"{flag}: cannot read {path.name} as a .npy array ({err})") from None
    except OSError as err:
        raise ValueError(f"{flag}: cannot read {path.name} as a .npy array ({err})") from None


def read_measurement(spec: str, out_shape: tuple[int, ...]) -> Any:
    """The ``--measurement`` file as one measurement of ``out_shape`` (a ``(1, *out_shape)`` array is accepted)."""
    import numpy as np

    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--measurement: no such file {spec!r}")
    if path.suffix.lower() in PICTURE_SUFFIXES:
        raise ValueError(f"--measurement: expected a .npy file holding y of shape {tuple(out_shape)}, got the picture "
                         f"{path.name}; use --image to measure and reconstruct a picture")
    array = _load_npy(path, "--measurement")
    if np.iscomplexobj(array) or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"--measurement: {path.name} holds {array.dtype} values, expected real numbers")
    shape = tuple(array.shape)
    if shape[1:] == tuple(out_shape) and shape[0] == 1:
        array = array[0]
    elif shape[1:] == tuple(out_shape):
        raise ValueError(f"--measurement: {path.name} holds a batch of {shape[0]} measurements {shape}; solve reconstructs "
                         f"one of shape {tuple(out_shape)}: save one (numpy.save('y0.npy', y[0])) or use invprob.solve in Python")
    elif shape != tuple(out_shape):
        raise ValueError(f"--measurement: {path.name} holds shape {shape}, the operator's measurements have shape {tuple(out_shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"--measurement: {path.name} holds NaN or infinite values")
    return array.astype(np.float32)


def projection_warning(prior: Any, prior_name: str, truth: Any) -> str | None:
    """A warning when ``truth`` is far from the prior's data: its relative projection error is over
    :data:`FAR_FROM_DATA` times the shipped prior's test-set value (None if fine or unknown)."""
    import torch

    from .priors import shipped_manifest

    typical = shipped_manifest().get(prior_name, {}).get("metrics", {}).get("test_relative_error")
    if not typical or not callable(getattr(prior, "project", None)):
        return None
    with torch.no_grad():
        x = truth.unsqueeze(0)
        error = float((prior.project(x) - x).norm() / x.norm().clamp_min(1e-12))
    if error <= FAR_FROM_DATA * typical:
        return None
    return (f"--image lies far from the prior's training data: its projection onto {prior_name}'s range has relative "
            f"error {error:.3f}, {error / typical:.0f}x the test set's typical {typical:.3f}; expect a poor reconstruction")


def method_options(method: str, given: dict[str, Any], sigma: float | None, quiet: bool) -> dict[str, Any]:
    """``given`` plus the noise level (when the method takes one) and the progress switch."""
    from ..solvers.base import options_model

    fields = options_model(method).model_fields
    options = dict(given)
    if "sigma" in fields and "sigma" not in options:
        if sigma is not None:
            options["sigma"] = sigma
        elif fields["sigma"].is_required():
            raise ValueError(f"--sigma: method {method!r} needs the measurement's noise level; pass --sigma (or --opt sigma=...)")
    if "progress" in fields and "progress" not in options:
        options["progress"] = not quiet
    return options


def known_start(method: str, options: Any, pinv: Any, *, op: Any = None, prior: Any = None, y: Any = None) -> tuple[Any, str] | None:
    """The image an A⁺y-based method starts from, with a label (None for random starts).

    iFlow's ``start="prior-mean"`` is ``m + A⁺(y − A m)`` with ``m`` the prior's mean image (the
    measurement-consistent point nearest to ``m``; it needs ``op``, ``prior`` and ``y``), ``"pinv"``
    is ``A⁺y``; either is clipped to ``start_range``. Other starts (a latent warm start) give None.
    """
    import torch

    if method in ("iflow", "iflow-l"):
        kind = getattr(options, "start", "pinv")
        if kind == "prior-mean" and op is not None and hasattr(prior, "mean_image") and hasattr(op, "adjoint"):
            with torch.no_grad():
                mean = prior.mean_image()[0].to(pinv.dtype)
                image = mean + op.pinv((y - op(mean[None])[0])[None])[0]
            label = "start: m + A⁺(y − A m), m the prior's mean"
        elif kind == "pinv":
            image, label = pinv, "start: A⁺y"
        else:
            return None  # e.g. a latent warm start: not an image known before the run
        low_high = getattr(options, "start_range", None)
        if low_high is None:
            return image, label
        return image.clamp(*low_high), f"{label}, clipped to [{low_high[0]:g}, {low_high[1]:g}]"
    if method == "tv":
        return pinv, "start: A⁺y"
    return None


def quality(truth: Any, image: Any) -> str:
    """``SNR … dB, PSNR … dB`` of ``image`` against ``truth``; the PSNR is that of both mapped to [0, 1]
    (peak 2 on the [-1, 1] scale), as the papers report it."""
    from ..metrics import psnr, snr

    a, b = truth.unsqueeze(0).float().cpu(), image.unsqueeze(0).float().cpu()
    return f"SNR {float(snr(a, b)[0]):.1f} dB, PSNR {float(psnr(a, b, data_range=2.0)[0]):.1f} dB"


def write_figure(path: Path, *, title: str, **inputs: Any) -> Path:
    """``figure.png``: the panels of :func:`figure_panels` side by side under ``title``."""
    from ..plots import panel_row

    return panel_row(figure_panels(**inputs), path, title=title)


def figure_panels(*, y: Any, op: Any, pinv: Any, result: Any, start: tuple[Any, str] | None, truth: Any | None) -> list[Any]:
    """The panels of ``figure.png``: measurement (or A⁺y when y is not an image), start, reconstruction, std, truth.

    A panel equal or within 5 % (relative) of an earlier one is not repeated: the earlier panel's
    title names both (e.g. A⁺y of a mask is y up to the noise in the unobserved pixels; iFlow's
    start is A⁺y clipped).
    """
    import torch

    from ..plots import Panel

    def caption(image: Any) -> str:
        return quality(truth, image) if truth is not None and tuple(image.shape) == tuple(truth.shape) else ""

    panels: list[Any] = []

    def add(panel: Any, alias: str) -> None:
        for earlier in panels:
            if tuple(earlier.image.shape) != tuple(panel.image.shape):
                continue
            a, b = earlier.image.float(), panel.image.float()
            difference = float((a - b).norm() / a.norm().clamp_min(1e-12))
            if difference <= 0.05:
                earlier.label += f" = {alias}" if difference <= 1e-4 else f" ≈ {alias}"
                return
        panels.append(panel)

    if y.dim() == 3:
        plain = float(y.abs().max()) <= 1.5
        panels.append(Panel(f"measurement y {tuple(y.shape)}", y, caption(y) if plain else "", None if plain else "measured value"))
        add(Panel("A⁺y", pinv, caption(pinv)), "A⁺y")
    else:
        panels.append(Panel(f"A⁺y (y: {y.numel()} numbers)", pinv, caption(pinv)))
    if start is not None:
        add(Panel(start[1], start[0], caption(start[0])), "start")
    label = "posterior mean" if result.std is not None else "reconstruction"
    add(Panel(f"{label} ({result.method})", result.x_hat, caption(result.x_hat)), f"{result.method} result")
    if result.std is not None:
        panels.append(Panel("posterior std", result.std, "pixel-wise", colorbar="std (image units, [-1, 1] scale)"))
    if truth is not None:
        panels.append(Panel("truth", truth))
    return panels


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: expected a directory, got the file {str(out)!r}")
    import numpy as np
    import torch

    from ..data import write_image
    from ..operators import add_noise
    from ..operators.spec import parse_operator
    from ..priors.pretrained import load_prior
    from ..solvers import solve

    device = check_device(args.device)
    op_spec = parse_operator(args.operator, name="--operator")
    given = key_values(args.opt, "--opt")
    if args.sigma is not None and (args.image or not args.sigma > 0):
        raise ValueError(f"--sigma: expected a positive noise level of a given --measurement, got {args.sigma}"
                         + (" with --image (whose simulated noise level is used)" if args.image else ""))
    prior = load_prior(args.prior, device=device)
    op = op_spec.build(prior.data_shape, args.seed).to(device)
    truth, sigma, what = None, args.sigma, ""
    if args.measurement:
        y = torch.from_numpy(read_measurement(args.measurement, op.out_shape)).to(device=device, dtype=prior.dtype)
        what = Path(args.measurement).name
        noise = f"given measurement, σ = {sigma:.4g}" if sigma is not None else "given measurement, σ unknown"
    else:
        truth, what = read_truth(args.image, prior.data_shape)
        truth = truth.to(device=device, dtype=prior.dtype)
        far = projection_warning(prior, args.prior, truth)
        if far:
            warn(far)
        with torch.no_grad():
            y, noise_std = add_noise(op(truth.unsqueeze(0)), snr_db=args.snr, generator=torch.Generator().manual_seed(args.seed))
        y, sigma = y[0], float(noise_std[0])
        noise = f"{args.snr:g} dB SNR, σ = {sigma:.4g}"
    options = method_options(args.method, given, sigma, args.quiet)
    print(f"operator: {op!r}; noise: {noise}")
    shown = {k: v for k, v in options.items() if k != "progress"}
    print(f"method: {args.method}" + (f" with {shown}" if shown else " with its defaults") + f"; prior: {args.prior}")
    result = solve(op, prior, y, args.method, generator=torch.Generator().manual_seed(args.seed), **options)
    with torch.no_grad():
        pinv = op.pinv(y.unsqueeze(0))[0]
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"x_hat": result.x_hat, "y": y, "pinv": pinv, "mean": result.mean, "std": result.std, "truth": truth}
    np.savez(out / "reconstruction.npz", **{k: v.detach().cpu().numpy() for k, v in arrays.items() if v is not None})
    write_image(out / "reconstruction.png", result.x_hat)
    start = known_start(args.method, result.options, pinv, op=op, prior=prior, y=y)
    title = f"{args.method} with {args.prior}: {op_spec.text} on {what}, {noise}"
    write_figure(out / "figure.png", y=y, op=op, pinv=pinv, result=result, start=start, truth=truth, title=title)
    line = f"{args.method}: {result.seconds:.2f} s"
    if truth is not None:
        line += f", {quality(truth, result.x_hat)} (A⁺y: {quality(truth, pinv)})"
    print(line)
    print(f"wrote {out / 'reconstruction.npz'}, {out / 'reconstruction.png'} and {out / 'figure.png'}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the subcommand to ``sub``."""
    p = sub.add_parser("solve", help="reconstruct one image", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description=(
        "Reconstruct an image: either simulate measurements of --image with --operator at --snr dB, "
        "or reconstruct a given measurement --measurement (.npy of the operator's output shape). "
        "Writes reconstruction.npz, reconstruction.png and figure.png (measurement or A⁺y, start, "
        "reconstruction and truth side by side) to --out."))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="ground truth to measure and reconstruct: a PNG/JPEG (resized to the prior's "
                                        "size), a .npy in [-1, 1], or DATASET:INDEX for a test image, e.g. mnist:3")
    source.add_argument("--measurement", help=".npy file holding one measurement y of the operator's output shape")
    p.add_argument("--prior", default=DEFAULT_PRIOR, help="shipped prior name (see `invprob priors`) or checkpoint directory")
    p.add_argument("--operator", default="gauss:250", help=f"one operator, KIND:VALUE: {OPERATOR_HELP}")
    p.add_argument("--method", default="iflow-l", help=f"reconstruction method; {METHOD_HELP}")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option (repeatable; VALUE read as JSON), e.g. --opt iterations=200")
    p.add_argument("--snr", type=float, default=30.0, help="SNR in dB of the simulated noise (with --image)")
    p.add_argument("--sigma", type=float, default=None,
                   help="noise std of a given --measurement, passed to methods that take one (with --image the simulated "
                        "noise level is passed)")
    p.add_argument("--seed", type=int, default=0, help="seed of operator, noise and method")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--out", default="runs/solve", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=run)
