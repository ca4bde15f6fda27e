"""Bad checkpoints, bad resumptions and bad training options: one table of (call, exception, words).

Every message must name what was wrong (the file, the setting, the option) and must not be raw
pydantic text.
"""

from __future__ import annotations

import pytest
import torch

import invprob
from invprob.checkpoint import CheckpointError, read_checkpoint_config
from invprob.cli import main
from invprob.priors import TRUMPET, load_prior_file
from invprob.training import TrumpetTrainOptions, fit, train_trumpet

from checkpoint_tools import edit_config


def _trumpet(latent_dim=4):
    torch.manual_seed(0)
    return TRUMPET((1, 8, 8), latent_dim, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=1, latent_hidden=8)


def _images(n=16):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


OPTS = dict(mse_steps=4, ml_steps=2, batch_size=8, checkpoint_every=2, progress=False)


def _saved(tmp_path, edit=None):
    _trumpet().save(tmp_path / "p")
    if edit is not None:
        edit_config(tmp_path / "p", edit)  # re-signed: a consistent file whose config is wrong
    return tmp_path / "p"


def _trained(tmp_path, **opts):
    train_trumpet(_trumpet(), _images(), tmp_path / "run", **{**OPTS, **opts})
    return tmp_path / "run"


def _killed(tmp_path):
    train_trumpet(_trumpet(), _images(), tmp_path / "run", stop_after=3, **OPTS)
    return tmp_path / "run"


CASES = {
    "load_prior(None)": (lambda t: invprob.load_prior(None), ValueError, ["prior", "None", "trumpet-digits"]),
    "load_prior('')": (lambda t: invprob.load_prior(""), ValueError, ["prior", "''"]),
    "class changed": (
        lambda t: load_prior_file(_saved(t, lambda r: r.update({"class": "RealNVP"}))),
        CheckpointError, ["checkpoint.safetensors", "RealNVP"]),
    "extra config key": (
        lambda t: load_prior_file(_saved(t, lambda r: r["config"].update(bogus=1))),
        CheckpointError, ["checkpoint.safetensors", "bogus"]),
    "missing config key": (
        lambda t: load_prior_file(_saved(t, lambda r: r["config"].__delitem__("gamma"))),
        CheckpointError, ["checkpoint.safetensors", "gamma"]),
    "missing record key": (
        lambda t: load_prior_file(_saved(t, lambda r: r.__delitem__("class"))),
        CheckpointError, ["checkpoint.safetensors", "missing keys", "class"]),
    "config not an object": (
        lambda t: load_prior_file(_saved(t, lambda r: [1, 2])),
        CheckpointError, ["checkpoint.safetensors", "JSON object", "list"]),
    "constructor config not an object": (
        lambda t: load_prior_file(_saved(t, lambda r: r.update(config=[1]))),
        CheckpointError, ["checkpoint.safetensors", "'config' must be a JSON object"]),
    "data_shape field contradicts the config": (
        lambda t: load_prior_file(_saved(t, lambda r: r.update(data_shape=[1, 16, 16])), expected_data_shape=(1, 16, 16)),
        CheckpointError, ["checkpoint.safetensors", "(1, 16, 16)", "builds (1, 8, 8)"]),
    "expected_data_shape of the rebuilt prior": (
        lambda t: load_prior_file(_saved(t), expected_data_shape=(1, 16, 16)),
        CheckpointError, ["checkpoint.safetensors", "data shape (1, 8, 8), expected (1, 16, 16)"]),
    "resume with another architecture": (
        lambda t: train_trumpet(_trumpet(latent_dim=8), _images(), _killed(t), resume=True, **OPTS),
        CheckpointError, ["mse-state", "latent_dim 4 ≠ 8"]),
    "resume with other options": (
        lambda t: train_trumpet(_trumpet(), _images(), _killed(t), resume=True, **{**OPTS, "lr": 0.5}),
        CheckpointError, ["mse-state", "lr 0.001 ≠ 0.5"]),
    "resume into an empty directory": (
        lambda t: train_trumpet(_trumpet(), _images(), t / "empty", resume=True, **OPTS),
        CheckpointError, ["resume", "empty", "no training checkpoint", "mse-state/"]),
    "fit(resume=True) without a checkpoint": (
        lambda t: fit(torch.nn.Linear(2, 2), lambda m, b, g: (m(b).sum(), {}), torch.zeros(8, 2), t, resume=True, steps=2,
                      batch_size=4),
        CheckpointError, ["resume", "train-state", "no checkpoint"]),
    "finished run resumed with a smaller budget": (
        lambda t: train_trumpet(_trumpet(), _images(), _trained(t), resume=True, **{**OPTS, "ml_steps": 1}),
        CheckpointError, ["steps", "ml-state", "step 2", "past the requested 1"]),
    "finished run resumed without its second phase": (
        lambda t: train_trumpet(_trumpet(), _images(), _trained(t), resume=True, **{**OPTS, "ml_steps": 0}),
        CheckpointError, ["ml-state", "0 steps"]),
    "first phase extended under a trained second phase": (
        lambda t: train_trumpet(_trumpet(), _images(), _trained(t), resume=True, **{**OPTS, "mse_steps": 6}),
        CheckpointError, ["'mse'", "'ml'", "6 steps"]),
    "unknown training option": (
        lambda t: train_trumpet(_trumpet(), _images(), t, mse_stepz=3),
        ValueError, ["train_trumpet", "mse_stepz", "Valid options", "mse_steps", "ml_steps"]),
    "invalid training option": (
        lambda t: train_trumpet(_trumpet(), _images(), t, lr=-1),
        ValueError, ["train_trumpet", "lr", "greater than 0", "Valid options"]),
    "unknown fit option": (
        lambda t: fit(torch.nn.Linear(2, 2), None, torch.zeros(8, 2), t, stepz=3),
        ValueError, ["fit", "stepz", "Valid options", "steps"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_table(tmp_path, case):
    call, exception, words = CASES[case]
    with pytest.raises(exception) as info:
        call(tmp_path)
    message = str(info.value)
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    assert "\n" not in message and "pydantic" not in message and "https://" not in message


def test_a_refused_smaller_budget_leaves_the_provenance_as_it_was(tmp_path):
    run = _trained(tmp_path)
    before = read_checkpoint_config(run)
    with pytest.raises(CheckpointError):
        train_trumpet(_trumpet(), _images(), run, resume=True, **{**OPTS, "ml_steps": 1})
    assert read_checkpoint_config(run) == before and before["metadata"]["options"]["ml_steps"] == 2


def test_the_readme_train_command_has_defaults_for_every_budget():
    opts = TrumpetTrainOptions()  # `invprob train trumpet --data digits --out DIR` passes no budget
    assert opts.mse_steps > 0 and opts.ml_steps >= 0


@pytest.mark.parametrize("argv, words", [
    (["--arch", "bogus=1"], ["--arch", "bogus", "valid settings", "hidden"]),
    (["--opt", "mse_stepz=1"], ["mse_stepz", "Valid options", "mse_steps"]),
    (["--resume"], ["resume", "no training checkpoint"]),
])
def test_cli_training_errors_are_one_clear_line(tmp_path, capsys, argv, words):
    code = main(["train", "trumpet", "--data", "digits", "--out", str(tmp_path / "out"), "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "pydantic" not in err
    for word in words:
        assert word in err
