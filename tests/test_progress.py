"""invprob.progress: timed plain lines when the output is not a terminal, each count printed once."""

import io

from invprob.progress import progress


def test_plain_lines_in_a_log_print_the_final_count_once():
    log = io.StringIO()
    with progress(3, "task", True, interval=0.0, stream=log) as bar:
        for _ in range(3):
            bar.update(loss=0.5)
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["task: 1/3", "task: 2/3", "task: 3/3"]
    assert "loss=0.5" in lines[-1] and "left" in lines[0]


def test_a_final_line_follows_when_the_last_count_was_not_printed():
    log = io.StringIO()
    with progress(3, "task", True, interval=3600.0, stream=log) as bar:
        bar._last -= 7200  # the first update is due
        for _ in range(3):
            bar.update()
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == ["task: 1/3", "task: 3/3"]


def test_disabled_progress_prints_nothing():
    log = io.StringIO()
    with progress(3, "task", False, interval=0.0, stream=log) as bar:
        bar.update()
        bar.write("hello")
    assert log.getvalue() == ""
