"""The benchmark runner (resumable grid, tables, figure) and the command line."""

import json

import pytest
import torch

from invprob.apps import bench
from invprob.cli import main
from invprob.data import load_dataset
from invprob.priors import save_prior
from invprob.priors.linear_gaussian import LinearGaussianPrior


@pytest.fixture(scope="module")
def pca_prior_dir(tmp_path_factory):
    """A linear-Gaussian prior on the 8 leading principal components of the training digits."""
    x = load_dataset("digits", split="train").images.flatten(1).double()
    mean = x.mean(0)
    _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
    W = vt[:8].T * (s[:8] / (x.shape[0] - 1) ** 0.5)
    prior = LinearGaussianPrior(W.float(), mean.float(), data_shape=(1, 32, 32))
    path = tmp_path_factory.mktemp("prior") / "pca"
    save_prior(prior, path)
    return path


def _run(out, prior_dir, **kwargs):
    args = dict(prior=str(prior_dir), n_images=2, operators="gauss:100,sr:4", methods="pinv,tv",
                method_options={"tv": {"iterations": 5}}, progress=False)
    args.update(kwargs)
    return bench.run(out, **args)


def test_parse_operators():
    specs = bench.parse_operators("gauss:250, randmask:0.15,sr,block:12,ct:30")
    assert [(s.kind, s.value) for s in specs] == [("gauss", 250), ("randmask", 0.15), ("sr", None), ("block", 12), ("ct", 30)]
    with pytest.raises(ValueError, match="unknown operator 'blur'.*valid: gauss"):
        bench.parse_operators("gauss:10,blur:3")
    with pytest.raises(ValueError, match="needs a int"):
        bench.parse_operators("gauss:ten")
    with pytest.raises(ValueError, match="twice"):
        bench.parse_operators("sr:4,sr:4")
    with pytest.raises(ValueError, match="comma-separated"):
        bench.parse_operators("")


def test_parse_methods_and_options():
    assert bench.parse_methods("pinv, tv") == ["pinv", "tv"]
    with pytest.raises(ValueError, match="unknown method 'nope'; valid: .*pinv"):
        bench.parse_methods("pinv,nope")
    assert bench.parse_option("csgm.restarts=3") == ("csgm", "restarts", 3)
    assert bench.parse_option("iflow.optimizer=adam") == ("iflow", "optimizer", "adam")
    with pytest.raises(ValueError, match="method.key=value"):
        bench.parse_option("restarts=3")


def test_tiny_benchmark_writes_tables_csv_and_figure(tmp_path, pca_prior_dir):
    summary = _run(tmp_path, pca_prior_dir)
    for name in ("results.jsonl", "results.csv", "tables.md", "examples.png", "bench_config.json"):
        assert (tmp_path / name).is_file(), name
    tables = (tmp_path / "tables.md").read_text()
    assert "| gauss:100 |" in tables and "| sr:4 |" in tables and "SSIM" in tables and "Seconds per image" in tables
    assert "machine:" in tables and "seed: 0" in tables
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 2
    mean, _, count = summary["snr"]["sr:4"]["pinv"]
    assert count == 2 and mean > 5  # replication of 4x4 block averages of enlarged digits is decent


def test_interrupted_benchmark_resumes_without_recomputing(tmp_path, pca_prior_dir):
    full = _run(tmp_path / "full", pca_prior_dir)
    _run(tmp_path / "cut", pca_prior_dir, stop_after=3)
    first = (tmp_path / "cut" / "results.jsonl").read_text().splitlines()
    assert len(first) == 3
    resumed = _run(tmp_path / "cut", pca_prior_dir)
    lines = (tmp_path / "cut" / "results.jsonl").read_text().splitlines()
    assert lines[:3] == first and len(lines) == 8
    for op_text in ("gauss:100", "sr:4"):
        for method in ("pinv", "tv"):
            assert resumed["snr"][op_text][method][0] == pytest.approx(full["snr"][op_text][method][0], rel=1e-5)


def test_other_configuration_in_out_dir_is_refused(tmp_path, pca_prior_dir):
    _run(tmp_path, pca_prior_dir, stop_after=1)
    with pytest.raises(ValueError, match="another configuration.*snr_db"):
        _run(tmp_path, pca_prior_dir, snr_db=20.0, stop_after=1)
    _run(tmp_path, pca_prior_dir, snr_db=20.0, stop_after=1, force=True)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("command", [[], ["bench"], ["priors"], ["solve"]])
def test_help_is_complete(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: invprob" in capsys.readouterr().out


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path, pca_prior_dir, capsys):
    code = main(["bench", "--out", str(tmp_path), "--prior", str(pca_prior_dir), "--operators", "blur:3"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().count("\n") == 0 and "unknown operator 'blur'" in err and "Traceback" not in err
    with pytest.raises(ValueError):
        main(["--debug", "bench", "--out", str(tmp_path), "--prior", str(pca_prior_dir), "--operators", "blur:3"])


def test_cli_solve_writes_reconstruction(tmp_path, pca_prior_dir, capsys):
    image = load_dataset("digits", split="test")[0]
    from invprob.data import write_image

    write_image(tmp_path / "digit.png", image)
    code = main(["solve", "--image", str(tmp_path / "digit.png"), "--prior", str(pca_prior_dir), "--operator", "sr:4",
                 "--method", "pinv", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert "SNR" in capsys.readouterr().out
    assert (tmp_path / "out" / "reconstruction.npz").is_file() and (tmp_path / "out" / "reconstruction.png").is_file()
    assert main(["solve", "--image", str(tmp_path / "missing.png"), "--prior", str(pca_prior_dir)]) == 1


def test_cli_train_and_resume(tmp_path, capsys):
    out = tmp_path / "tiny"
    args = ["train", "trumpet", "--data", "ellipses", "--size", "16", "--out", str(out), "--latent-dim", "16",
            "--arch", "n_scales=2", "--arch", "hidden=4", "--arch", "latent_hidden=8", "--arch", "n_latent_steps=2",
            "--opt", "mse_steps=3", "--opt", "ml_steps=2", "--opt", "batch_size=4", "--opt", "n_val=4", "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    assert "prior saved" in capsys.readouterr().out
    assert main(args) == 1 and "resume" in capsys.readouterr().err  # a checkpoint is there
    assert main([*args, "--resume"]) == 0
    from invprob import load_prior

    assert load_prior(out).data_shape == (1, 16, 16)
    assert main(["train", "trumpet", "--out", str(tmp_path / "x"), "--opt", "mse_stepz=3"]) == 1
    assert "mse_stepz" in capsys.readouterr().err


def test_benchmark_runs_samplers_with_the_known_noise_level(tmp_path, pca_prior_dir):
    summary = _run(tmp_path, pca_prior_dir, operators="gauss:100", methods="pinv,langevin",
                   method_options={"langevin": {"n_samples": 3, "burn_in": 3, "n_chains": 2, "step_size": 1e-3}})
    assert summary["snr"]["gauss:100"]["langevin"][2] == 2
