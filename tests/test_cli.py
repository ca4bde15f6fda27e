"""The ``solve``, ``methods``, ``priors`` and ``demo`` subcommands: help, outputs, warnings and one-line errors."""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from invprob.operators.spec import OPERATOR_KINDS
from invprob.cli import build_parser, main
from invprob.cli import solve as solve_cli
from invprob.cli.methods import method_rows, option_rows
from invprob.data import load_dataset, write_image
from invprob.priors.linear_gaussian import LinearGaussianPrior
from invprob.solvers import list_methods




def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


# --- priors and methods --------------------------------------------------------------------------------


def test_priors_lists_from_the_manifest_without_importing_torch():
    code = ("import sys, time; t = time.perf_counter(); from invprob.cli import main; main(['priors']); "
            "print('seconds', time.perf_counter() - t); print('torch' in sys.modules, 'sklearn' in sys.modules)")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - start
    assert "trumpet-digits" in out and out.strip().endswith("False False"), out
    assert wall < 10  # typically 0.1 s; the bound only catches a return of the 3 s torch import under any load


def test_priors_name_prints_the_model_card_and_unknown_names_are_one_line(capsys):
    assert main(["priors", "trumpet-digits"]) == 0
    assert "# trumpet-digits" in capsys.readouterr().out
    assert main(["priors", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope'" in err and "trumpet-digits" in err


@pytest.mark.parametrize("argv", [["--threads", "1", "methods"], ["methods", "--threads", "1"]])
def test_threads_sets_torchs_thread_count_before_or_after_the_subcommand(argv, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(argv) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "two"])
def test_threads_refuses_a_count_below_one_or_not_an_integer(value, capsys):
    with pytest.raises(SystemExit):
        main(["--threads", value, "methods"])
    assert "--threads: expected an integer >= 1" in capsys.readouterr().err


def test_methods_lists_every_method_with_its_kind(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    kinds = {r["name"]: r["kind"] for r in method_rows()}
    assert set(kinds) == set(list_methods())
    assert kinds["pinv"] == "baseline" and kinds["iflow-l"] == "map" and kinds["svi"] == "posterior"
    for name, kind in kinds.items():
        assert any(line.split()[:2] == [name, kind] for line in out.splitlines()), name
    assert main(["methods", "--kind", "posterior"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line.strip() and not line.startswith("`")]
    assert set(listed) == {n for n, k in kinds.items() if k == "posterior"}


@pytest.mark.parametrize("method", list_methods())
def test_methods_name_lists_every_option_with_type_default_and_description(method, capsys):
    from invprob.solvers.base import options_model

    assert main(["methods", method]) == 0
    out = capsys.readouterr().out
    rows = option_rows(method)
    assert [r["name"] for r in rows] == list(options_model(method).model_fields)
    for row in rows:
        assert f"{row['name']}: {row['type']}, {row['default']}" in out
        assert row["description"], f"{method}.{row['name']} has no description"


def test_option_rows_give_ranges():
    rows = {r["name"]: r for r in option_rows("iflow-l")}
    assert rows["iterations"]["type"] == "int" and rows["iterations"]["range"] == ">= 1 and <= 1000000"
    assert rows["lr"]["range"] == "> 0" and rows["iterations"]["default"] == f"default {rows_default('iflow-l', 'iterations')!r}"
    assert rows["optimizer"]["type"] == "'adam' | 'gd'"
    assert {r["name"]: r for r in option_rows("langevin")}["sigma"]["default"] == "required"


def rows_default(method, name):
    from invprob.solvers.base import options_model

    return options_model(method).model_fields[name].default


def test_methods_kinds_match_the_registry():
    from invprob.cli.methods import KINDS
    from invprob.solvers.base import KINDS as REGISTRY_KINDS

    assert tuple(KINDS) == tuple(REGISTRY_KINDS)


# --- help texts ----------------------------------------------------------------------------------------


def test_solve_help_lists_every_operator_kind_and_method(capsys):
    with pytest.raises(SystemExit):
        main(["solve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for kind in OPERATOR_KINDS.values():
        assert kind.usage in out, kind.usage
    for kind, names in solve_cli.METHOD_KINDS.items():
        assert sorted(names) == list_methods(kind), kind
    assert "(default: gauss:250)" in out and "(default: iflow-l)" in out and "(default: 30.0)" in out


@pytest.mark.parametrize("command", ["solve", "demo", "methods", "priors"])
def test_help_shows_every_default(command):
    text = " ".join(_subparser(command).format_help().split())
    for action in _subparser(command)._actions:
        if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            continue
        assert f"default: {action.default}" in text or f"(default {action.default})" in text, (command, action.dest)


# --- solve ---------------------------------------------------------------------------------------------


def test_solve_names_the_operator_and_writes_figure_and_arrays(tmp_path, pca_prior_dir, capsys):
    out = tmp_path / "out"
    assert main(["solve", "--image", "digits:3", "--prior", pca_prior_dir, "--operator", "sr:4", "--method", "tv",
                 "--opt", "iterations=5", "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "SuperResolution(in_shape=(1, 32, 32), factor=4)" in text and "σ = " in text and "SNR" in text and "PSNR" in text
    arrays = np.load(out / "reconstruction.npz")
    assert set(arrays) == {"x_hat", "y", "pinv", "truth"} and arrays["y"].shape == (1, 8, 8)
    assert (out / "figure.png").stat().st_size > 1000 and (out / "reconstruction.png").is_file()


@pytest.mark.parametrize("method, opts", [
    ("langevin", ["n_samples=3", "burn_in=2", "n_chains=2"]),
    ("svi", ["steps=2", "batch_size=4", "n_samples=4", "n_layers=1", "hidden=8"]),
])
def test_solve_passes_the_simulated_noise_level_to_samplers(method, opts, tmp_path, pca_prior_dir, capsys):
    argv = ["solve", "--image", "digits:0", "--prior", pca_prior_dir, "--operator", "gauss:100", "--method", method,
            "--out", str(tmp_path), "--quiet"]
    for opt in opts:
        argv += ["--opt", opt]
    assert main(argv) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    simulated = float(text.split("σ = ")[1].split()[0].rstrip(";"))
    assert f"'sigma': {simulated:.4g}"[:12] in text  # the options line shows the σ passed
    assert {"mean", "std"} <= set(np.load(tmp_path / "reconstruction.npz"))


def test_solve_reconstructs_a_given_measurement_with_sigma(tmp_path, pca_prior_dir, capsys):
    np.save(tmp_path / "y.npy", np.random.default_rng(0).normal(size=(1, 100)).astype(np.float32))
    argv = ["solve", "--measurement", str(tmp_path / "y.npy"), "--prior", pca_prior_dir, "--operator", "gauss:100",
            "--method", "langevin", "--opt", "n_samples=2", "--opt", "burn_in=1", "--opt", "n_chains=1", "--out", str(tmp_path / "o")]
    assert main(argv) == 1 and "--sigma" in capsys.readouterr().err  # langevin needs the noise level
    assert main([*argv, "--sigma", "0.1", "--quiet"]) == 0, capsys.readouterr().err
    assert "'sigma': 0.1" in capsys.readouterr().out


def test_solve_warns_about_large_resizing(tmp_path, pca_prior_dir, capsys):
    photo = torch.rand(1, 256, 200) * 2 - 1
    write_image(tmp_path / "photo.png", photo)
    assert main(["solve", "--image", str(tmp_path / "photo.png"), "--prior", pca_prior_dir, "--method", "pinv",
                 "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "photo.png is 200x256 pixels" in err and "resized" in err


def test_solve_warns_when_the_image_is_far_from_the_prior_data(tmp_path, capsys):
    noise = np.random.default_rng(0).uniform(-1, 1, size=(1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)
    assert main(["solve", "--image", str(tmp_path / "noise.npy"), "--prior", "trumpet-digits", "--method", "pinv",
                 "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "far from the prior's training data" in err and "relative error" in err
    assert main(["solve", "--image", "digits:0", "--prior", "trumpet-digits", "--method", "pinv", "--out", str(tmp_path / "o")]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.fixture
def bad_files(tmp_path):
    """Files for the error table: each one is wrong in one way."""
    np.save(tmp_path / "batch.npy", np.zeros((3, 100), np.float32))
    np.save(tmp_path / "short.npy", np.zeros(99, np.float32))
    np.save(tmp_path / "nan_y.npy", np.full(100, np.nan, np.float32))
    np.save(tmp_path / "complex.npy", np.zeros(100, np.complex64))
    with open(tmp_path / "pickled.npy", "wb") as f:
        np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("not an array")
    write_image(tmp_path / "digit.png", torch.zeros(1, 32, 32))
    np.save(tmp_path / "bright.npy", np.full((1, 32, 32), 255.0, np.float32))
    np.save(tmp_path / "nan.npy", np.full((1, 32, 32), np.nan, np.float32))
    (tmp_path / "afile").write_text("x")
    with open(tmp_path / "obj.pkl", "wb") as f:
        pickle.dump([1], f)
    return tmp_path


ERRORS = [
    # (argv after `invprob`, words the one-line message must contain); {d} is the folder of bad_files, {p} the prior
    (["solve", "--measurement", "{d}/batch.npy", "--operator", "gauss:100"], ["--measurement", "batch.npy", "batch of 3", "(100,)"]),
    (["solve", "--measurement", "{d}/short.npy", "--operator", "gauss:100"], ["--measurement", "short.npy", "(99,)", "(100,)"]),
    (["solve", "--measurement", "{d}/digit.png"], ["--measurement", "digit.png", "picture", "--image"]),
    (["solve", "--measurement", "{d}/pickled.npy"], ["--measurement", "pickled.npy", "pickled", "allow_pickle=False"]),
    (["solve", "--measurement", "{d}/text.npy"], ["--measurement", "text.npy", "cannot read"]),
    (["solve", "--measurement", "{d}/nan_y.npy", "--operator", "gauss:100"], ["--measurement", "nan_y.npy", "NaN"]),
    (["solve", "--measurement", "{d}/complex.npy", "--operator", "gauss:100"], ["--measurement", "complex.npy", "complex"]),
    (["solve", "--measurement", "{d}/missing.npy"], ["--measurement", "no such file", "missing.npy"]),
    (["solve", "--image", "{d}/bright.npy"], ["--image", "bright.npy", "[255, 255]", "[-1, 1]"]),
    (["solve", "--image", "{d}/nan.npy"], ["--image", "nan.npy", "NaN"]),
    (["solve", "--image", "{d}/missing.png"], ["--image", "no such file", "missing.png", "digits:3"]),
    (["solve", "--image", "digits:5000"], ["--image", "297 test images", "5000"]),
    (["solve", "--image", "digits:0", "--operator", "gauss:250,sr:4"], ["--operator", "one operator", "got 2", "gauss:M"]),
    (["solve", "--image", "digits:0", "--operator", "blur:3"], ["unknown operator 'blur'", "gauss"]),
    (["solve", "--image", "digits:0", "--method", "nope"], ["unknown method 'nope'", "iflow-l"]),
    (["solve", "--image", "digits:0", "--opt", "iterationz=3", "--method", "tv"], ["iterationz", "Valid options", "iterations"]),
    (["solve", "--image", "digits:0", "--device", "banana"], ["--device", "'banana'", "cpu"]),
    (["solve", "--image", "digits:0", "--out", "{d}/afile"], ["--out", "afile", "directory"]),
    (["solve", "--image", "digits:0", "--sigma", "0.1"], ["--sigma", "--measurement", "simulated"]),
    (["solve", "--measurement", "{d}/batch.npy", "--sigma", "-1"], ["--sigma", "positive", "-1"]),
    (["solve", "--image", "digits:0", "--opt", "lam"], ["--opt", "key=value", "'lam'"]),
    (["demo", "--n-images", "0"], ["n_images", ">= 1", "0"]),
    (["demo", "--n-images", "100000"], ["n_images", "at most 500", "100000"]),
    (["demo", "--methods", "pinv,nope"], ["unknown method 'nope'", "iflow-l"]),
    (["demo", "--methods", "pinv,pinv"], ["methods", "distinct", "pinv"]),
    (["demo", "--out", "{d}/afile"], ["out_dir", "directory", "afile"]),
]


@pytest.mark.parametrize("argv, words", ERRORS, ids=[" ".join(a[:3]) for a, _ in ERRORS])
def test_cli_errors_are_one_line_naming_the_problem(argv, words, bad_files, pca_prior_dir, capsys):
    argv = [a.format(d=bad_files) for a in argv]
    if argv[0] == "solve":
        argv += ["--prior", pca_prior_dir, "--out", str(bad_files / "out")] if "--out" not in argv else ["--prior", pca_prior_dir]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("invprob: error: "), err
    for word in words:
        assert word in err, (word, err)
    assert not (bad_files / "out").exists()  # nothing written on an error


def _panels(spec, method, **options):
    from invprob.operators.spec import parse_operator
    from invprob.solvers import solve

    op = parse_operator(spec).build((1, 32, 32), 0)
    truth = load_dataset("digits", split="test")[0]
    y = op(truth[None])[0] + 0.01 * torch.randn(op.out_shape)
    prior = LinearGaussianPrior(torch.randn(1024, 4) * 0.1, torch.zeros(1024), data_shape=(1, 32, 32))
    result = solve(op, prior, y, method, **options)
    pinv = op.pinv(y[None])[0]
    start = solve_cli.known_start(method, result.options, pinv, op=op, prior=prior, y=y)
    return [(p.label, p.colorbar) for p in solve_cli.figure_panels(y=y, op=op, pinv=pinv, result=result, start=start, truth=truth)]


def test_figure_panels_show_each_image_once_with_its_role():
    # a vector measurement: A⁺y stands in for it; iFlow started at A⁺y (clipped) shows that start
    labels = [label for label, _ in _panels("gauss:100", "iflow", start="pinv", iterations=2, progress=False)]
    assert labels[0] in ("A⁺y (y: 100 numbers) = start", "A⁺y (y: 100 numbers) ≈ start") or labels[1].startswith("start: ")
    assert labels[-1] == "truth" and labels[-2] == "reconstruction (iflow)"
    # a masked image: y and A⁺y agree up to the noise in the hole, shown once
    labels = [label for label, _ in _panels("block:12", "pinv")]
    assert labels == ["measurement y (1, 32, 32) ≈ A⁺y ≈ pinv result", "truth"]
    # a sampler: the posterior std with a labelled colour bar
    panels = _panels("sr:4", "langevin", sigma=0.01, n_samples=3, burn_in=1, n_chains=2, progress=False)
    assert ("posterior std", "std (image units, [-1, 1] scale)") in panels and panels[0][0] == "measurement y (1, 8, 8)"
    assert [p[0] for p in panels][1:3] == ["A⁺y", "posterior mean (langevin)"]


def test_known_start_and_figure_dedupe(tmp_path, pca_prior_dir):
    from invprob.solvers import make_options

    pinv = torch.full((1, 4, 4), 2.0)
    from types import SimpleNamespace

    start, label = solve_cli.known_start("iflow", SimpleNamespace(start="pinv", start_range=(-1.0, 1.0)), pinv)
    assert label == "start: A⁺y, clipped to [-1, 1]" and float(start.max()) == 1.0
    assert solve_cli.known_start("csgm", make_options("csgm"), pinv) is None

    assert solve_cli.known_start("iflow", SimpleNamespace(start="latent", start_range=None), pinv) is None


def test_known_start_prior_mean_is_measurement_consistent():
    from types import SimpleNamespace

    from invprob.operators import BlockMask

    prior = LinearGaussianPrior(torch.randn(1024, 4) * 0.1, torch.full((1024,), 0.3), data_shape=(1, 32, 32))
    op = BlockMask((1, 32, 32), 12)
    y = op(torch.rand(1, 1, 32, 32) * 2 - 1)[0]
    options = SimpleNamespace(start="prior-mean", start_range=(-1.0, 1.0))
    start, label = solve_cli.known_start("iflow-l", options, op.pinv(y[None])[0], op=op, prior=prior, y=y)
    assert label.startswith("start: m + A⁺(y − A m)") and label.endswith("clipped to [-1, 1]")
    mean = prior.mean_image()[0]
    assert torch.allclose(op(start[None])[0], y.clamp(-1, 1), atol=1e-5)  # observed pixels from y
    assert torch.allclose(start[:, 16, 16], mean[:, 16, 16].clamp(-1, 1), atol=1e-5)  # the hole from the prior mean
