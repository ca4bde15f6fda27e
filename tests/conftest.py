import os

import pytest
import torch

# Tests use tiny problems, for which one thread is fastest and immune to oversubscription.
torch.set_num_threads(int(os.environ.get("INVPROB_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def pca_prior_dir(tmp_path_factory):
    """A saved linear-Gaussian prior on the 8 leading principal components of the training digits
    (fast to solve with), as the path string the CLI takes."""
    from invprob.data import load_dataset
    from invprob.priors import save_prior
    from invprob.priors.linear_gaussian import LinearGaussianPrior

    x = load_dataset("digits", split="train").images.flatten(1).double()
    mean = x.mean(0)
    _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
    prior = LinearGaussianPrior((vt[:8].T * (s[:8] / (x.shape[0] - 1) ** 0.5)).float(), mean.float(), data_shape=(1, 32, 32))
    path = tmp_path_factory.mktemp("prior") / "pca"
    save_prior(prior, path)
    return str(path)
