"""The README runs as written: every ```python block executes, every command line is exercised,
and every script in examples/ runs with its ``--quick`` budgets.

Commands are read from the README's ```bash blocks; each must have an entry in :data:`COMMANDS`
saying how the test exercises it (run with small budgets appended, or argument-validated against
the parser when it is too long for the fast suite), so a command added to the README without a
test fails here.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from invprob.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def blocks(text: str, language: str) -> list[str]:
    """The fenced code blocks of ``language`` in ``text``."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def command_lines(text: str) -> list[str]:
    """Every command of the ```bash blocks, without its comment (``# ...``)."""
    out = []
    for block in blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():  # join continued lines
            words = shlex.split(line, comments=True)
            if words:
                out.append(" ".join(words))
    return out


#: How each README command is exercised. "run": executed in a temporary directory with the extra
#: arguments appended (small budgets, the tiny PCA prior ``{prior}``); "parse": its arguments are
#: validated by the parser (the run is too long for the fast suite; another test covers it);
#: "make": the Makefile target exists and runs the command named; "torchrun": the arguments after
#: ``-m invprob`` are validated by the parser (the distributed runs are tested in test_distributed_training.py).
COMMANDS: dict[str, tuple[str, list[str]]] = {
    "make demo": ("make", ["invprob demo"]),
    "make test": ("make", ["pytest"]),
    "invprob demo": ("run", ["--prior", "{prior}", "--n-images", "1", "--methods", "pinv,tv", "--quiet"]),
    "invprob bench --out runs/bench": ("run", ["--prior", "{prior}", "--n-images", "1", "--operators", "sr:4",
                                               "--methods", "pinv,tv", "--opt", "tv.iterations=3", "--quiet"]),
    "invprob solve --image mnist:3 --operator sr:4 --method iflow-l --out runs/solve":
        ("run", ["--prior", "{prior}", "--opt", "iterations=3", "--quiet"]),
    "invprob methods": ("run", []),
    "invprob methods csgm": ("run", []),
    "invprob priors": ("run", []),
    "invprob priors trumpet-digits": ("run", []),
    "invprob uq-ct --phantom shepp-logan --out runs/uq": ("parse", []),
    "invprob uq-ct --phantom ellipses:0 --eval-phantoms 19 --calibrate 19 --out runs/uq": ("parse", []),
    "invprob uq-ct --phantom scan.dcm --calibrate runs/uq/calibration.json --out runs/scan": ("parse", []),
    "invprob train trumpet --data digits --out runs/my-prior": ("parse", []),
    "torchrun --nproc_per_node=2 -m invprob train trumpet --data digits --out runs/trumpet-ddp": ("torchrun", []),
    "torchrun --nproc_per_node=2 -m invprob train trumpet --data digits --out runs/trumpet-ddp --resume": ("torchrun", []),
    "torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=trumpet-ddp "
    "-m invprob train trumpet --data digits --out /shared/runs/trumpet-ddp --opt batch_size=256": ("torchrun", []),
}




def test_the_readme_has_python_blocks_and_commands():
    assert blocks(README, "python") and command_lines(README)


@pytest.mark.parametrize("index", range(len(blocks(README, "python"))))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a snippet writes lands here
    code = blocks(README, "python")[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


def test_every_readme_command_is_exercised():
    listed = command_lines(README)
    missing = [c for c in listed if c not in COMMANDS]
    assert not missing, f"README commands without an entry in tests/test_readme.py COMMANDS: {missing}"
    stale = [c for c in COMMANDS if c not in listed]
    assert not stale, f"COMMANDS entries no longer in the README: {stale}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_readme_command(command, tmp_path, monkeypatch, pca_prior_dir, capsys):
    how, extra = COMMANDS[command]
    words = shlex.split(command)
    if how == "make":
        dry = subprocess.run(["make", "-n", "-C", str(ROOT), words[1]], capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
        for expected in extra:
            assert expected in dry.stdout, (expected, dry.stdout)
        return
    if how == "torchrun":
        assert words[0] == "torchrun" and "-m" in words and words[words.index("-m") + 1] == "invprob", command
        build_parser().parse_args(words[words.index("-m") + 2 :])
        return
    assert words[0] == "invprob"
    argv = words[1:]
    if how == "parse":
        build_parser().parse_args(argv)  # SystemExit (exit code 2) on an unknown or malformed argument
        return
    monkeypatch.chdir(tmp_path)
    code = main(argv + [e.format(prior=pca_prior_dir) for e in extra])
    assert code == 0, capsys.readouterr().err


def test_examples_are_mentioned_in_the_readme():
    for path in EXAMPLES:
        assert f"examples/{path.name}" in README, path.name


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_with_quick_budgets(path, tmp_path):
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(path), "--quick"], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
