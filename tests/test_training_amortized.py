"""train_amortized through the shared training loop: seeded, resumable with out_dir, the prior untouched."""

import torch

from invprob.operators import Identity
from invprob.priors import LinearGaussianPrior
from invprob.solvers import AmortizedPosterior
from invprob.training import train_amortized

OPTS = dict(sigma=0.5, steps=8, batch_size=4, n_calibration=8, n_layers=1, hidden=8, checkpoint_every=3, progress=False)


def _setup():
    prior = LinearGaussianPrior(torch.eye(4), data_shape=(1, 2, 2))
    return Identity((1, 2, 2)), prior


def _same(a, b):
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=ka)


def test_a_stopped_run_resumes_to_the_uninterrupted_result_and_is_saved(tmp_path):
    op, prior = _setup()
    trainable = [p.requires_grad for p in prior.parameters()]
    full = train_amortized(op, prior, generator=torch.Generator().manual_seed(0), **OPTS)
    stopped = train_amortized(op, prior, out_dir=tmp_path, generator=torch.Generator().manual_seed(0),
                              callback=lambda step, x, info: step == 5, **OPTS)
    assert len(stopped.history["loss"]) == 5
    resumed = train_amortized(op, prior, out_dir=tmp_path, resume=True, generator=torch.Generator().manual_seed(0), **OPTS)
    assert resumed.history["step"] == list(range(1, 9))
    _same(full, resumed)
    _same(full, AmortizedPosterior.load(tmp_path))
    assert all(p.grad is None for p in prior.parameters())
    assert [p.requires_grad for p in prior.parameters()] == trainable


def test_the_callback_sees_decoded_samples_and_the_loss():
    op, prior = _setup()
    seen = []
    train_amortized(op, prior, callback=lambda step, x, info: seen.append((step, tuple(x.shape), sorted(info))), **OPTS)
    assert seen[0] == (1, (4, 1, 2, 2), ["data_fit", "loss"]) and len(seen) == 8
