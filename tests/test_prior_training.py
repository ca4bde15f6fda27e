"""Training TRUMPET (two phases) and RealNVP (maximum likelihood): progress, resumption, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from invprob.priors import TRUMPET, RealNVP, load_prior_file
from invprob.training import CheckpointError, adopt_injective, bits_per_dim, train_flow, train_trumpet

from checkpoint_tools import edit_config


def _blobs(n=32, size=8, seed=0):
    """Smooth synthetic images in [-1, 1]: Gaussian blobs at random positions."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.arange(size, dtype=torch.float32)
    centres = 2 + (size - 4) * torch.rand(n, 2, generator=g)
    d2 = (grid.view(1, -1, 1) - centres[:, 0].view(-1, 1, 1)) ** 2 + (grid.view(1, 1, -1) - centres[:, 1].view(-1, 1, 1)) ** 2
    return (2 * torch.exp(-d2 / 4) - 1).unsqueeze(1)


def _trumpet():
    torch.manual_seed(0)
    return TRUMPET((1, 8, 8), 16, n_scales=2, hidden=8, unet_depth=1, n_latent_steps=2, latent_hidden=16).double()


def _realnvp():
    torch.manual_seed(0)
    return RealNVP((1, 8, 8), n_scales=2, n_steps=1, hidden=8, unet_depth=1).double()


T_OPTS = dict(mse_steps=30, ml_steps=20, batch_size=8, lr=3e-3, checkpoint_every=5, validate_every=10, progress=False)
F_OPTS = dict(steps=25, batch_size=8, lr=3e-3, checkpoint_every=5, validate_every=10, progress=False)


def _assert_same_parameters(a, b):
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=ka)


def test_trumpet_two_phases_reduce_their_losses_and_save_the_prior(tmp_path):
    prior = _trumpet()
    report = train_trumpet(prior, _blobs(), tmp_path, val_dataset=_blobs(16, seed=1), command="pytest", **T_OPTS)
    assert report["finished"]
    mse, ml = report["mse"], report["ml"]
    assert sum(mse["mse"][-5:]) < 0.7 * sum(mse["mse"][:5])
    assert sum(ml["latent_nll"][-5:]) < sum(ml["latent_nll"][:5])
    assert mse["val"][-1]["rel_error"] < mse["val"][0]["rel_error"]
    loaded = load_prior_file(tmp_path, expected_class="TRUMPET", expected_data_shape=(1, 8, 8))
    _assert_same_parameters(prior, loaded)
    meta = loaded.metadata
    assert meta["command"] == "pytest" and meta["trainer"] == "train_trumpet"
    assert meta["options"]["mse_steps"] == 30 and meta["wall_seconds_this_call"] > 0
    assert set(meta["metrics"]) == {"rel_error", "latent_nll"}
    assert meta["metrics"] == pytest.approx(report["metrics"])


def test_phase_two_leaves_the_injective_part_untouched(tmp_path):
    prior = _trumpet()
    train_trumpet(prior, _blobs(), tmp_path, **{**T_OPTS, "ml_steps": 0})
    g_state = {k: v.clone() for k, v in prior.injective.state_dict().items()}
    prior2 = _trumpet()
    train_trumpet(prior2, _blobs(), tmp_path / "b", **T_OPTS)
    for k, v in prior2.injective.state_dict().items():
        torch.testing.assert_close(v, g_state[k], rtol=0, atol=0)


def test_a_new_latent_flow_is_fitted_on_an_adopted_injective_part(tmp_path):
    source = _trumpet()
    train_trumpet(source, _blobs(), tmp_path / "source", **T_OPTS)
    torch.manual_seed(1)
    prior = TRUMPET((1, 8, 8), 16, n_scales=2, hidden=8, unet_depth=1, n_latent_steps=3, latent_hidden=32).double()
    adopt_injective(prior, source)
    report = train_trumpet(prior, _blobs(), tmp_path / "refit", **{**T_OPTS, "mse_steps": 0})
    assert "mse" not in report and not (tmp_path / "refit" / "mse-state").exists()
    assert sum(report["ml"]["latent_nll"][-5:]) < sum(report["ml"]["latent_nll"][:5])
    x = _blobs(4, seed=2).double()
    torch.testing.assert_close(prior.project(x), source.project(x), rtol=0, atol=0)
    loaded = load_prior_file(tmp_path / "refit")
    assert loaded.metadata["options"]["mse_steps"] == 0 and loaded.config()["n_latent_steps"] == 3
    torch.testing.assert_close(loaded.project(x), source.project(x), rtol=0, atol=0)


def test_adopting_an_injective_part_needs_the_same_architecture():
    other = TRUMPET((1, 8, 8), 16, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=2, latent_hidden=16).double()
    with pytest.raises(ValueError, match=r"source: expected an injective part like the prior's, got hidden 4 \(prior: 8\)"):
        adopt_injective(_trumpet(), other)
    with pytest.raises(ValueError, match="source: expected a trained injective part"):
        adopt_injective(_trumpet(), _trumpet())
    with pytest.raises(TypeError, match="source: expected a TRUMPET, got RealNVP"):
        adopt_injective(_trumpet(), _realnvp())


def test_keeping_an_untrained_injective_part_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mse_steps: 0 keeps the injective part as it is, so it must be trained"):
        train_trumpet(_trumpet(), _blobs(), tmp_path, **{**T_OPTS, "mse_steps": 0})


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("kill_at", [7, 36])  # inside phase 1, inside phase 2
def test_trumpet_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path, kill_at, schedule):
    opts = {**T_OPTS, "lr_schedule": schedule}
    full = _trumpet()
    train_trumpet(full, _blobs(), tmp_path / "full", **opts)
    killed = _trumpet()
    report = train_trumpet(killed, _blobs(), tmp_path / "run", stop_after=kill_at, **opts)
    assert not report["finished"] and not (tmp_path / "run" / "checkpoint.safetensors").exists()
    resumed = _trumpet()  # a new process: fresh weights, state from disk only
    assert train_trumpet(resumed, _blobs(), tmp_path / "run", resume=True, **opts)["finished"]
    _assert_same_parameters(full, resumed)
    assert load_prior_file(tmp_path / "run").metadata["options"]["lr_schedule"] == schedule


def test_trumpet_cosine_schedule_changes_the_steps_and_refuses_a_changed_budget(tmp_path):
    constant, cosine = _trumpet(), _trumpet()
    train_trumpet(constant, _blobs(), tmp_path / "constant", **T_OPTS)
    train_trumpet(cosine, _blobs(), tmp_path / "cosine", **{**T_OPTS, "lr_schedule": "cosine"})
    assert any(not torch.equal(a, b) for a, b in zip(constant.state_dict().values(), cosine.state_dict().values()))
    train_trumpet(_trumpet(), _blobs(), tmp_path / "run", stop_after=7, **{**T_OPTS, "lr_schedule": "cosine"})
    with pytest.raises(CheckpointError, match="cosine schedule depends on it"):
        train_trumpet(_trumpet(), _blobs(), tmp_path / "run", resume=True, **{**T_OPTS, "mse_steps": 40, "lr_schedule": "cosine"})


def test_flow_training_reduces_bits_per_dim_and_resumes_exactly(tmp_path):
    full = _realnvp()
    report = train_flow(full, _blobs(), tmp_path / "full", val_dataset=_blobs(16, seed=1), **F_OPTS)
    bpd = report["ml"]["bits_per_dim"]
    assert sum(bpd[-5:]) < sum(bpd[:5])
    assert report["ml"]["val"][-1]["bits_per_dim"] < report["ml"]["val"][0]["bits_per_dim"]
    killed = _realnvp()
    assert not train_flow(killed, _blobs(), tmp_path / "run", val_dataset=_blobs(16, seed=1), stop_after=12, **F_OPTS)["finished"]
    resumed = _realnvp()
    train_flow(resumed, _blobs(), tmp_path / "run", val_dataset=_blobs(16, seed=1), resume=True, **F_OPTS)
    _assert_same_parameters(full, resumed)
    loaded = load_prior_file(tmp_path / "run", expected_class="RealNVP")
    _assert_same_parameters(full, loaded)
    assert loaded.metadata["metrics"]["bits_per_dim"] == pytest.approx(report["metrics"]["bits_per_dim"])


def test_bits_per_dim_of_the_uniform_density_is_eight():
    n = 64
    uniform = torch.tensor([-n * math.log(2.0)])  # density 2^-n on [-1, 1]^n
    torch.testing.assert_close(bits_per_dim(uniform, n), torch.tensor([8.0]))


def test_corrupt_or_mismatched_checkpoints_are_refused_with_the_file_named(tmp_path):
    prior = _trumpet()
    train_trumpet(prior, _blobs(), tmp_path, **{**T_OPTS, "mse_steps": 5, "ml_steps": 0})
    with pytest.raises(CheckpointError, match="holds a TRUMPET, expected a RealNVP"):
        load_prior_file(tmp_path, expected_class="RealNVP")
    edit_config(tmp_path, lambda record: record["config"].update(hidden=4))
    with pytest.raises(CheckpointError, match="do not fit|do not match"):
        load_prior_file(tmp_path)
    weights = tmp_path / "checkpoint.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="checkpoint.safetensors"):
        load_prior_file(tmp_path)
    with pytest.raises(CheckpointError, match="no such directory"):
        load_prior_file(tmp_path / "nowhere")


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="mse_steps"):
        train_trumpet(_trumpet(), _blobs(), tmp_path, mse_steps=-1, ml_steps=1)
    with pytest.raises(ValueError, match="mse_steps, ml_steps: expected at least one step.*got 0 and 0"):
        train_trumpet(_trumpet(), _blobs(), tmp_path, mse_steps=0, ml_steps=0)
    with pytest.raises(ValueError, match="mse_stepz"):
        train_trumpet(_trumpet(), _blobs(), tmp_path, mse_stepz=3, mse_steps=1, ml_steps=1)
    with pytest.raises(TypeError, match="expected a TRUMPET"):
        train_trumpet(_realnvp(), _blobs(), tmp_path, mse_steps=1, ml_steps=1)
    with pytest.raises(ValueError, match="val_dataset: expected shape"):
        train_trumpet(_trumpet(), _blobs(), tmp_path, val_dataset=torch.zeros(4, 1, 4, 4), mse_steps=1, ml_steps=1)
    with pytest.raises(ValueError, match="val_dataset: expected at least one image"):
        train_flow(_realnvp(), _blobs(), tmp_path, val_dataset=torch.zeros(0, 1, 8, 8), steps=1, progress=False)
    with pytest.raises(ValueError, match="non-finite"):
        bad = _blobs()
        bad[0, 0, 0, 0] = math.nan
        train_flow(_realnvp(), bad, tmp_path, steps=1, progress=False)
