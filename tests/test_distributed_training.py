"""Training under torchrun semantics: 2 CPU processes (gloo) against one process with the same global batch.

One ``torch.multiprocessing`` spawn of 2 ranks runs every scenario in turn (an uninterrupted run,
a run killed after a checkpoint and resumed, a NaN injected on rank 1, amortised VI), recording every file each
rank opens for writing under the run directories with an audit hook.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from invprob.priors import TRUMPET
from invprob.training import TrainingDiverged, fit, train_amortized, train_trumpet

OPTS = dict(mse_steps=6, ml_steps=4, batch_size=8, lr=3e-3, checkpoint_every=2, validate_every=3, progress=False)
KILL_AFTER = 7  # 6 mse steps and 1 ml step: phase 2 is killed after its checkpoint-free first step


def _images():
    return torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _trumpet():
    torch.manual_seed(0)
    return TRUMPET((1, 8, 8), 4, n_scales=2, hidden=4, unet_depth=1, n_latent_steps=2, latent_hidden=8).double()


def _nan_on_rank_1(model, batch, generator, step):
    loss = (model(batch.double()) - batch.double()).pow(2).mean()
    if int(os.environ.get("RANK", "0")) == 1 and step == 2:
        loss = loss * math.nan
    return loss, {}


def _worker(rank: int, port: int, tmp: str) -> None:
    tmp_path = Path(tmp)
    runs = str(tmp_path / "runs")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    writes: list[str] = []

    def audit(event, args):
        if event == "open" and args and str(args[0]).startswith(runs):
            mode, flags = args[1] or "", args[2] or 0
            if any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                writes.append(str(args[0]))
        elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.unlink") and str(args[0]).startswith(runs):
            writes.append(" ".join([event, *map(str, args[:2])]))

    sys.addaudithook(audit)
    results: dict[str, object] = {}
    full = _trumpet()
    train_trumpet(full, _images(), tmp_path / "runs" / "full", **OPTS)
    killed = _trumpet()
    results["killed_finished"] = train_trumpet(killed, _images(), tmp_path / "runs" / "resume", stop_after=KILL_AFTER, **OPTS)["finished"]
    resumed = _trumpet()  # a fresh process would rebuild the model and read the state from disk
    results["resumed_finished"] = train_trumpet(resumed, _images(), tmp_path / "runs" / "resume", resume=True, **OPTS)["finished"]
    try:
        fit(torch.nn.Linear(64, 64).double(), lambda m, b, g, s: _nan_on_rank_1(m, b.flatten(1), g, s), _images(),
            tmp_path / "runs" / "nan", pass_step=True, steps=5, batch_size=8, progress=False)
        results["nan_error"] = None
    except TrainingDiverged as err:
        results["nan_error"] = str(err)
    from invprob.operators import Identity
    from invprob.priors import LinearGaussianPrior

    avi = train_amortized(Identity((1, 2, 2)), LinearGaussianPrior(torch.eye(4), data_shape=(1, 2, 2)),
                          out_dir=tmp_path / "runs" / "avi", sigma=0.5, steps=4, batch_size=8, n_calibration=8,
                          n_layers=1, hidden=8, generator=torch.Generator().manual_seed(0))
    import torch.distributed as dist

    dist.destroy_process_group()
    out = tmp_path / "results"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(out / f"full-{rank}.safetensors"))
    save_file({k: v.contiguous() for k, v in resumed.state_dict().items()}, str(out / f"resumed-{rank}.safetensors"))
    save_file({k: v.contiguous() for k, v in avi.state_dict().items()}, str(out / f"avi-{rank}.safetensors"))
    (out / f"report-{rank}.json").write_text(json.dumps({**results, "writes": writes}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    (tmp / "results").mkdir()
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        assert key not in os.environ
    mp.spawn(_worker, args=(_free_port(), str(tmp)), nprocs=2, join=True)
    reports = [json.loads((tmp / "results" / f"report-{r}.json").read_text()) for r in range(2)]
    params = {name: [load_file(str(tmp / "results" / f"{name}-{r}.safetensors")) for r in range(2)] for name in ("full", "resumed", "avi")}
    return tmp, reports, params


def test_two_ranks_end_with_the_parameters_of_one_process_with_the_same_global_batch(two_ranks, tmp_path):
    _, _, params = two_ranks
    single = _trumpet()
    train_trumpet(single, _images(), tmp_path, **OPTS)
    for rank in range(2):
        state = params["full"][rank]
        for key, value in single.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=1e-5, msg=f"rank {rank}: {key}")


def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_two_rank_result(two_ranks):
    _, reports, params = two_ranks
    assert [r["killed_finished"] for r in reports] == [False, False]
    assert [r["resumed_finished"] for r in reports] == [True, True]
    for rank in range(2):
        for key, value in params["full"][rank].items():
            torch.testing.assert_close(params["resumed"][rank][key], value, rtol=0, atol=0, msg=f"rank {rank}: {key}")


def test_only_rank_0_writes_files(two_ranks):
    tmp, reports, _ = two_ranks
    assert reports[1]["writes"] == []
    written = reports[0]["writes"]
    assert any(w.startswith("os.rename") and w.endswith("full/checkpoint.safetensors") for w in written)
    assert (tmp / "runs" / "full" / "checkpoint.safetensors").is_file()


def test_a_non_finite_loss_on_rank_1_stops_both_ranks_with_one_clear_error(two_ranks):
    _, reports, _ = two_ranks
    for report in reports:
        assert report["nan_error"] is not None
        assert "at step 2 on rank 1 of 2" in report["nan_error"] and "\n" not in report["nan_error"]


def test_amortized_vi_trains_through_the_same_distributed_path(two_ranks):
    tmp, reports, params = two_ranks
    for key, value in params["avi"][0].items():  # DDP keeps the ranks' models identical
        torch.testing.assert_close(params["avi"][1][key], value, rtol=0, atol=0, msg=key)
    assert (tmp / "runs" / "avi" / "checkpoint.safetensors").is_file() and reports[1]["writes"] == []
