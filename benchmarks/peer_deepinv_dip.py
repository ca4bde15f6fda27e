"""deepinv's Deep Image Prior on the inputs written by ``bench_latency.py`` (run in the peer venv).

    $PEER_VENV/bin/python benchmarks/peer_deepinv_dip.py INPUTS.npz OUT.json --threads 1

The peer venv holds torch 2.14.1, torchvision 0.29.1 and deepinv (``bash ../shared/peers/setup_peer_venv.sh``,
or ``python -m venv V && V/bin/pip install torch==2.14.1 torchvision==0.29.1 deepinv``). For each
problem of the file, deepinv gets the very matrix invprob used (``dinv.physics.LinearPhysics`` with
``A(x) = x.flatten() @ M.T``) and the very noisy measurements; its DIP is the configuration of the
peer harness: ``ConvDecoder(img_size, in_size=(4, 4), layers=7, channels=64)``, 1000 Adam steps at
learning rate 1e-2 on ``||y - A G(z)||^2``, the final iterate, seed ``1000 + image``. Each image is
solved on its own and timed with ``time.perf_counter`` around the call.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def matrix_physics(dinv, matrix: torch.Tensor, image_shape: tuple[int, ...]):
    """A deepinv linear physics applying the dense ``matrix`` to flattened images."""
    return dinv.physics.LinearPhysics(
        A=lambda x: x.flatten(1) @ matrix.T,
        A_adjoint=lambda y: (y @ matrix).reshape(y.shape[0], *image_shape),
    )


def run_dip(dinv, physics, y: torch.Tensor, image_shape: tuple[int, ...], seed: int, channels: int, iterations: int):
    torch.manual_seed(seed)
    generator = dinv.models.ConvDecoder(img_size=image_shape, in_size=(4, 4), layers=7, channels=channels)
    dip = dinv.models.DeepImagePrior(generator, img_size=(channels, 4, 4), iterations=iterations, learning_rate=1e-2)
    return dip(y, physics).detach()


def main() -> None:
    import deepinv as dinv

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs")
    parser.add_argument("out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=None, help="first N images of each problem (default: all)")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = np.load(args.inputs)
    x = torch.from_numpy(data["x"]).float()
    image_shape = tuple(x.shape[1:])
    problems = [key[: -len("__matrix")] for key in data.files if key.endswith("__matrix")]
    results: dict[str, object] = {"deepinv": dinv.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
                                  "iterations": args.iterations, "channels": args.channels, "problems": {}}
    n = len(x) if args.images is None else min(args.images, len(x))
    for name in problems:
        physics = matrix_physics(dinv, torch.from_numpy(data[f"{name}__matrix"]).float(), image_shape)
        y = torch.from_numpy(data[f"{name}__y"]).float()
        snrs, seconds = [], []
        for i in range(n):
            start = time.perf_counter()
            x_hat = run_dip(dinv, physics, y[i : i + 1], image_shape, 1000 + i, args.channels, args.iterations)
            seconds.append(time.perf_counter() - start)
            snrs.append(float(20 * torch.log10(x[i].norm() / (x[i] - x_hat[0]).norm())))
        results["problems"][name] = {"snr": snrs, "seconds": seconds}
        print(f"deepinv dip {name}: SNR {np.mean(snrs):.2f} dB, {np.median(seconds):.2f} s/image", flush=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
