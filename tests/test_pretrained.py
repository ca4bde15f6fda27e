"""The shipped priors: offline loading, checksums, quality bars, a smoke test through solve()."""

import json
import shutil
import time

import pytest
import torch

import invprob
from invprob.data import load_dataset
from invprob.metrics import relative_error
from invprob.operators import RandomGaussian, add_noise
from invprob.priors import pretrained
from invprob.training import CheckpointError

SHIPPED = pretrained.list_priors()
#: Quality bars of issue 6 on ||x - f(f^dagger(x))|| / ||x|| over test images.
BARS = {"trumpet-digits": 0.10, "trumpet-ellipses": 0.15, "nif-digits": 0.25, "rae-digits": 0.25}
DATASETS = {"digits": {}, "ellipses": {"size": 64}}


def _test_images(name, n=16):
    entry = pretrained.describe_prior(name)
    dataset = load_dataset(entry["dataset"], split="test", **DATASETS[entry["dataset"]])
    return torch.stack([dataset[i] for i in range(n)])


def test_trumpet_digits_is_shipped():
    assert "trumpet-digits" in SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_prior_loads_fast_and_meets_its_bar(name):
    start = time.perf_counter()
    prior = invprob.load_prior(name)
    assert time.perf_counter() - start < 2.0
    x = _test_images(name)
    with torch.no_grad():
        error = relative_error(x, prior.project(x)).mean()
        samples = prior.sample(4, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert float(error) <= BARS.get(name, 1.0)
    assert samples.shape == (4, *prior.data_shape) and bool(torch.isfinite(samples).all())


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    shutil.copytree(pretrained.PRETRAINED_DIR, tmp_path / "pretrained")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "pretrained")
    monkeypatch.setattr(pretrained, "MANIFEST", tmp_path / "pretrained" / "MANIFEST.json")
    weights = tmp_path / "pretrained" / "trumpet-digits" / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum of .*weights.safetensors does not match"):
        invprob.load_prior("trumpet-digits")


def test_unknown_prior_name_lists_valid_ones():
    with pytest.raises(ValueError, match="trumpet-digits"):
        invprob.load_prior("trumpet-digitz")


def test_manifest_entries_have_model_cards():
    manifest = json.loads(pretrained.MANIFEST.read_text())
    for name in manifest:
        card = pretrained.describe_prior(name)["model_card"]
        assert "## Test metrics" in card and "training command" in card


def test_smoke_solve_with_shipped_prior():
    prior = invprob.load_prior("trumpet-digits")
    x = _test_images("trumpet-digits", n=1)
    op = RandomGaussian(prior.data_shape, 250, seed=0)
    y, sigma = add_noise(op(x), snr_db=30, generator=torch.Generator().manual_seed(0))
    result = invprob.solve(op, prior, y[0], "iflow", iterations=30, progress=False)
    assert result.x_hat.shape == prior.data_shape
    start = relative_error(x, op.pinv(y)).item()
    assert relative_error(x, result.x_hat.unsqueeze(0)).item() < 0.5 * start
