"""A checkpoint is one atomic, checksummed unit: a kill at any filesystem step of a save loses nothing.

The fault-injection tests replace the ``os`` module seen by :mod:`invprob.checkpoint` with one that
raises at the k-th filesystem call, for every k of a save, then resume in a "new process" (fresh
model, state from disk only) and compare with an uninterrupted run bit for bit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import invprob
from invprob import checkpoint
from invprob.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config, save_checkpoint
from invprob.priors import TRUMPET, load_prior_file
from invprob.training import fit

from checkpoint_tools import edit_config, to_legacy, write_legacy

STEPS = ("makedirs", "open", "write", "fsync", "close", "replace", "unlink")


class Kill(BaseException):
    """A simulated SIGKILL: nothing catches it."""


class FaultyOS:
    """``os`` with a kill before its ``fail_at``-th filesystem call (1-based; 0: never); counts the calls."""

    def __init__(self, fail_at: int = 0) -> None:
        self.fail_at, self.count = fail_at, 0

    def __getattr__(self, name):
        attr = getattr(os, name)
        if name not in STEPS:
            return attr

        def step(*args, **kwargs):
            self.count += 1
            if self.count == self.fail_at:
                raise Kill(name)
            return attr(*args, **kwargs)

        return step


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))


def _model():
    torch.manual_seed(3)
    return Tiny()


def _loss(model, batch, generator):
    noisy = batch + 0.1 * torch.randn(batch.shape, generator=generator)
    return (model.net(noisy) - batch).pow(2).mean(), {}


DATA = torch.utils.data.TensorDataset(torch.randn(40, 4, generator=torch.Generator().manual_seed(1)))
OPTS = dict(steps=20, batch_size=8, lr=1e-2, checkpoint_every=5, progress=False)


def _same(a: nn.Module, b: nn.Module) -> None:
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=ka)


def _steps_per_save(tmp_path: Path, monkeypatch) -> int:
    counter = FaultyOS()
    monkeypatch.setattr(checkpoint, "os", counter)
    save_checkpoint(tmp_path / "count", {"w": torch.zeros(3)}, {"a": 1})  # the first save (new directory)
    first = counter.count
    save_checkpoint(tmp_path / "count", {"w": torch.ones(3)}, {"a": 2})
    monkeypatch.setattr(checkpoint, "os", os)
    assert counter.count == 2 * first
    return first


def test_a_kill_at_every_filesystem_step_of_a_save_resumes_to_the_identical_result(tmp_path, monkeypatch):
    per_save = _steps_per_save(tmp_path, monkeypatch)
    assert per_save >= 8  # makedirs, open, write, fsync, close, replace, open dir, fsync dir, close dir
    full = _model()
    fit(full, _loss, DATA, tmp_path / "full", **OPTS)
    for k in range(1, per_save + 1):
        run = tmp_path / f"kill-{k}"
        monkeypatch.setattr(checkpoint, "os", FaultyOS(fail_at=per_save + k))  # inside the save at step 10
        with pytest.raises(Kill):
            fit(_model(), _loss, DATA, run, **OPTS)
        monkeypatch.setattr(checkpoint, "os", os)
        assert read_checkpoint_config(run / "train-state")["step"] in (5, 10), k
        resumed = _model()
        history = fit(resumed, _loss, DATA, run, resume=True, **OPTS)
        assert history["step"] == list(range(1, 21)), k
        _same(full, resumed)


def test_a_kill_during_the_final_prior_save_leaves_the_old_prior_or_the_new_one(tmp_path, monkeypatch):
    per_save = _steps_per_save(tmp_path, monkeypatch)
    prior = TRUMPET((1, 8, 8), 4, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=1, latent_hidden=8)
    prior.save(tmp_path / "p", version=1)
    for k in range(1, per_save + 1):
        monkeypatch.setattr(checkpoint, "os", FaultyOS(fail_at=k))
        with pytest.raises(Kill):
            prior.save(tmp_path / "p", version=2)
        monkeypatch.setattr(checkpoint, "os", os)
        assert load_prior_file(tmp_path / "p").metadata["version"] in (1, 2)


def test_a_real_sigkill_during_checkpointing_resumes_to_the_identical_result(tmp_path):
    script = textwrap.dedent(
        f"""
        import torch
        torch.set_num_threads(1)
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_checkpoint_atomic import DATA, _loss, _model
        from invprob.training import fit
        fit(_model(), _loss, DATA, {str(tmp_path / 'run')!r}, steps=400, batch_size=8, lr=1e-2,
            checkpoint_every=1, progress=False)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(invprob.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    state = tmp_path / "run" / "train-state"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (checkpoint.has_checkpoint(state) and read_checkpoint_config(state)["step"] >= 20):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # almost all of the time goes into saving: the kill lands in a save
    proc.wait()
    killed_at = read_checkpoint_config(state)["step"]
    assert 20 <= killed_at < 400
    full = _model()
    fit(full, _loss, DATA, tmp_path / "full", steps=400, batch_size=8, lr=1e-2, checkpoint_every=400, progress=False)
    resumed = _model()
    fit(resumed, _loss, DATA, tmp_path / "run", resume=True, steps=400, batch_size=8, lr=1e-2, checkpoint_every=400,
        progress=False)
    _same(full, resumed)


def _tiny_trumpet():
    torch.manual_seed(0)
    return TRUMPET((1, 8, 8), 4, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=1, latent_hidden=8)


def test_an_edited_gamma_is_refused_naming_the_file(tmp_path):
    _tiny_trumpet().save(tmp_path / "p")
    file = edit_config(tmp_path / "p", lambda record: record["config"].update(gamma=0.5), resign=False)
    with pytest.raises(CheckpointError, match=f"{file}: checksum mismatch"):
        load_prior_file(tmp_path / "p")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        invprob.load_prior(str(tmp_path / "p"))


def test_legacy_two_file_checkpoints_load_only_when_the_user_opts_out_of_the_checksum(tmp_path):
    prior = _tiny_trumpet()
    prior.save(tmp_path / "p")
    to_legacy(tmp_path / "p")
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["config.json", "weights.safetensors"]
    with pytest.raises(CheckpointError, match="config.json: old two-file format.*allow_unverified=True"):
        load_prior_file(tmp_path / "p")
    loaded = invprob.load_prior(tmp_path / "p", allow_unverified=True)
    _same(prior, loaded)
    # an edited config.json is refused the same way (no checksum covers it)
    text = (tmp_path / "p" / "config.json").read_text().replace('"gamma": 0.001', '"gamma": 0.5')
    (tmp_path / "p" / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match="config.json"):
        load_prior_file(tmp_path / "p")
    # saving into a legacy directory replaces the pair by the single checksummed file
    loaded.save(tmp_path / "p")
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["checkpoint.safetensors"]
    _same(prior, load_prior_file(tmp_path / "p"))


def test_a_missing_checksum_is_an_error_unless_the_user_opts_out(tmp_path):
    from safetensors.torch import save as save_safetensors

    file = tmp_path / "c.safetensors"
    file.write_bytes(save_safetensors({"w": torch.ones(2)}, metadata={checkpoint.CONFIG_KEY: '{"a": 1}'}))
    with pytest.raises(CheckpointError, match=f"{file}: has no checksum"):
        load_checkpoint(file)
    assert load_checkpoint(file, allow_unverified=True)[1] == {"a": 1}


def test_a_legacy_training_state_resumes_to_the_identical_result(tmp_path):
    full = _model()
    fit(full, _loss, DATA, tmp_path / "full", **OPTS)
    fit(_model(), _loss, DATA, tmp_path / "run", stop_after=10, **OPTS)
    to_legacy(tmp_path / "run" / "train-state")  # as the previous version wrote it
    resumed = _model()
    fit(resumed, _loss, DATA, tmp_path / "run", resume=True, **OPTS)
    _same(full, resumed)
    assert sorted(f.name for f in (tmp_path / "run" / "train-state").iterdir()) == ["checkpoint.safetensors"]
