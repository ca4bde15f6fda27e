"""The demo behind ``make demo`` / ``invprob demo``: compressed sensing of test images with every MAP method.

Loads a shipped prior (default :data:`~invprob.apps.presets.DEFAULT_PRIOR`), measures a few test images of its dataset with
``RandomGaussian(m=250)`` at 30 dB SNR, reconstructs them with each point-estimate method, prints a
table (SNR, SSIM, seconds per image) and writes ``demo.png`` (rows: images labelled by class;
columns: truth and each method, ``pinv`` being ``A^+ y``; each reconstruction's SNR under it).
Every method runs with its defaults, as ``invprob.solve(op, prior, y, method)`` would; those
that take a noise level get the known one, one per image. Offline.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .presets import DEFAULT_DATASET, DEFAULT_PRIOR, DEMO_N_IMAGES, MAP_METHODS

METHODS = MAP_METHODS


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    prior: str = DEFAULT_PRIOR,
    n_images: int = DEMO_N_IMAGES,
    m: int = 250,
    snr_db: float = 30.0,
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Run the demo; return ``{method: {"snr", "ssim", "seconds"}}`` (means over images) and write the figure.

    The test images come from the dataset the prior was trained on (its manifest entry; for a
    checkpoint directory, :data:`~invprob.apps.presets.DEFAULT_DATASET`). The figure has one row per
    image, labelled by its class where the dataset has labels, and each reconstruction's SNR under it.
    """
    from .._checks import check_int
    from ..data import load_dataset
    from ..metrics import snr, ssim
    from ..operators import RandomGaussian, add_noise
    from ..plots import PIXEL_SCALE, image_grid
    from ..priors.pretrained import list_priors, load_prior, describe_prior
    from ..progress import progress as progress_indicator
    from ..solvers import make_options, solve
    from ..solvers.base import options_model

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: expected a directory, got the file {str(out)!r}")
    if not methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods: expected distinct method names, got {methods!r}")
    for method in methods:
        make_options(method)  # an unknown name fails here, before any work
    dataset_name = describe_prior(prior).get("dataset", DEFAULT_DATASET) if prior in list_priors() else DEFAULT_DATASET
    dataset = load_dataset(dataset_name, split="test")
    n_images = check_int(n_images, "n_images", minimum=1)
    if n_images > len(dataset):
        raise ValueError(f"n_images: expected at most {len(dataset)} (the {dataset_name} test split), got {n_images}")
    model = load_prior(prior)
    x = torch.stack([dataset[i] for i in range(n_images)])
    op = RandomGaussian(model.data_shape, m, seed=seed)
    with torch.no_grad():
        y, sigma = add_noise(op(x), snr_db=snr_db, generator=torch.Generator().manual_seed(seed))
    table: dict[str, dict[str, float]] = {}
    estimates, scores = {}, {}
    with progress_indicator(len(methods), "demo", enabled=progress) as bar:
        for method in methods:
            options = {"sigma": sigma} if "sigma" in options_model(method).model_fields else {}  # known, one per image
            result = solve(op, model, y, method, generator=torch.Generator().manual_seed(seed), **options)
            x_hat, seconds = result.x_hat.detach(), result.seconds
            estimates[method], scores[method] = x_hat, snr(x, x_hat)
            table[method] = {"snr": float(scores[method].mean()), "ssim": float(ssim(x, x_hat).mean()),
                             "seconds": seconds / n_images}
            bar.update(method=method, snr=table[method]["snr"])
    labels = getattr(dataset, "labels", None)
    row_labels = [(f"class {int(labels[i])} " if labels is not None else "") + f"(test image {i})" for i in range(n_images)]
    rows = [[x[i], *(estimates[mth][i] for mth in methods)] for i in range(n_images)]
    captions = [["", *(f"{float(scores[mth][i]):.1f} dB" for mth in methods)] for i in range(n_images)]
    figure = image_grid(rows, row_labels, ["truth", *(f"{mth} (A⁺y)" if mth == "pinv" else mth for mth in methods)], out / "demo.png", captions=captions,
                        colorbar=PIXEL_SCALE,
                        title=f"{prior}: RandomGaussian(m={m}) at {snr_db:g} dB SNR; SNR of each reconstruction under it")
    print(format_table(table, f"{prior}, RandomGaussian(m={m}) on {n_images} test images of {dataset_name} at {snr_db:g} dB SNR"))
    print("every method with its defaults (`invprob methods NAME`) and the known noise level sigma")
    print(f"\nfigure: {figure.resolve()}")
    return table


def format_table(table: dict[str, dict[str, float]], title: str) -> str:
    """A plain-text table of the demo's results."""
    lines = [title, f"{'method':10s} {'SNR (dB)':>9s} {'SSIM':>6s} {'s/image':>8s}"]
    for method, row in table.items():
        lines.append(f"{method:10s} {row['snr']:9.2f} {row['ssim']:6.3f} {row['seconds']:8.2f}")
    return "\n".join(lines)
