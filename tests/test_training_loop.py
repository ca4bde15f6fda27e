"""The shared training loop: determinism, kill-and-resume, checkpoint integrity."""

import json

import pytest
import torch
from torch import nn

from invprob.training import CheckpointError, TrainingDiverged, fit, load_checkpoint, save_checkpoint
from invprob.checkpoint import flatten_state, read_checkpoint_config, unflatten_state

from checkpoint_tools import edit_config


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(40, 4, generator=g))


def _loss(model, batch, generator):
    noisy = batch + 0.1 * torch.randn(batch.shape, generator=generator)
    loss = (model.net(noisy) - batch).pow(2).mean()
    return loss, {"mse": float(loss.detach())}


def _model():
    torch.manual_seed(3)
    return Tiny()


OPTS = dict(steps=30, batch_size=8, lr=1e-2, checkpoint_every=5, progress=False)


def test_loss_decreases(tmp_path):
    model = _model()
    history = fit(model, _loss, _data(), tmp_path, **OPTS)
    assert history["step"] == list(range(1, 31))
    assert sum(history["loss"][-5:]) < sum(history["loss"][:5])
    assert len(history["mse"]) == 30


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    full = _model()
    fit(full, _loss, _data(), tmp_path / "full", **OPTS)
    killed = _model()
    fit(killed, _loss, _data(), tmp_path / "killed", stop_after=12, **OPTS)  # "killed" after step 12
    resumed = _model()  # a fresh process: new model, state from disk only
    history = fit(resumed, _loss, _data(), tmp_path / "killed", resume=True, **OPTS)
    assert history["step"] == list(range(1, 31))
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_counts_the_seconds_of_every_call(tmp_path):
    fit(_model(), _loss, _data(), tmp_path, stop_after=10, **OPTS)
    state = tmp_path / "train-state"
    first = read_checkpoint_config(state)
    fit(_model(), _loss, _data(), tmp_path, resume=True, **OPTS)
    second = read_checkpoint_config(state)
    assert first["seconds"] == first["seconds_this_call"] > 0
    assert second["seconds"] == pytest.approx(first["seconds"] + second["seconds_this_call"])


def test_existing_checkpoint_needs_resume(tmp_path):
    fit(_model(), _loss, _data(), tmp_path, stop_after=5, **OPTS)
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(_model(), _loss, _data(), tmp_path, **OPTS)


def test_resume_with_other_options_is_refused(tmp_path):
    fit(_model(), _loss, _data(), tmp_path, stop_after=5, **OPTS)
    with pytest.raises(CheckpointError, match="lr"):
        fit(_model(), _loss, _data(), tmp_path, resume=True, **{**OPTS, "lr": 0.5})


def test_unknown_and_invalid_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="stepz"):
        fit(_model(), _loss, _data(), tmp_path, stepz=3)
    with pytest.raises(ValueError, match="lr"):
        fit(_model(), _loss, _data(), tmp_path, steps=3, lr=-1.0)


def test_non_finite_loss_stops_with_clear_error(tmp_path):
    def bad(model, batch, generator):
        return model.net(batch).sum() * float("nan"), {}

    with pytest.raises(TrainingDiverged, match="step 0"):
        fit(_model(), bad, _data(), tmp_path, **OPTS)


def _blowing_up(factor, start=12):
    """The usual loss, multiplied by ``factor`` from step ``start`` on (a finite blow-up)."""

    def loss(model, batch, generator, step):
        value, metrics = _loss(model, batch, generator)
        return value * (factor if step >= start else 1.0), metrics

    return loss


def test_finite_blow_up_stops_with_clear_error_also_after_a_resume(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"step 12 is more than max_loss_growth=1e\+12 times \|loss\| .* first step"):
        fit(_model(), _blowing_up(1e14), _data(), tmp_path / "a", pass_step=True, **OPTS)
    strict = dict(OPTS, max_loss_growth=1e4)
    with pytest.raises(TrainingDiverged, match="step 1 is more than max_loss_growth=10000"):  # from the second step on
        fit(_model(), _blowing_up(1e6, start=1), _data(), tmp_path / "early", pass_step=True, **strict)
    fit(_model(), _blowing_up(1e6), _data(), tmp_path / "b", pass_step=True, stop_after=11, **strict)
    with pytest.raises(TrainingDiverged, match="step 12"):
        fit(_model(), _blowing_up(1e6), _data(), tmp_path / "b", pass_step=True, resume=True, **strict)


def test_growth_within_the_bound_or_with_the_check_off_trains_on(tmp_path):
    assert fit(_model(), _blowing_up(1e6), _data(), tmp_path / "a", pass_step=True, **OPTS)["step"][-1] == 30
    history = fit(_model(), _blowing_up(1e14), _data(), tmp_path / "b", pass_step=True, max_loss_growth=None, **OPTS)
    assert history["step"][-1] == 30
    with pytest.raises(ValueError, match="max_loss_growth"):
        fit(_model(), _loss, _data(), tmp_path / "c", max_loss_growth=0.5, **OPTS)


def test_corrupt_and_missing_checkpoints_are_detected(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.arange(6.0)}, {"hello": 1})
    tensors, config = load_checkpoint(tmp_path)
    torch.testing.assert_close(tensors["w"], torch.arange(6.0))
    assert config["hello"] == 1
    edit_config(tmp_path, lambda c: c.update(hello=2), resign=False)
    with pytest.raises(CheckpointError, match="checkpoint.safetensors: checksum mismatch"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, {"w": torch.arange(6.0)}, {"hello": 1})
    weights = tmp_path / "checkpoint.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such directory"):
        load_checkpoint(tmp_path / "nowhere")


def test_flatten_state_round_trip():
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    tensors, skeleton = flatten_state(state)
    json.dumps(skeleton)
    back = unflatten_state(tensors, skeleton)
    assert back["param_groups"] == state["param_groups"]
    torch.testing.assert_close(back["state"][0]["exp_avg"], torch.ones(2))
    assert list(back["state"]) == [0]


def test_pass_step_gives_the_loss_the_step_index_across_a_resume(tmp_path):
    seen = []

    def scheduled(model, batch, generator, step):
        seen.append(step)
        return _loss(model, batch, generator)

    fit(_model(), scheduled, _data(), tmp_path, pass_step=True, stop_after=4, **{**OPTS, "steps": 8})
    fit(_model(), scheduled, _data(), tmp_path, pass_step=True, resume=True, **{**OPTS, "steps": 8})
    assert seen == list(range(8))
