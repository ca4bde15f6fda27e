import os

import pytest
import torch

# Tests use tiny problems, for which one thread is fastest and immune to oversubscription.
torch.set_num_threads(int(os.environ.get("INVPROB_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
