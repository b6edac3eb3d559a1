"""Quick mode, ``stepline run [-j N] -- COMMAND... [::: ARG...]``, through the real command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..driver import ENV, stepline
from ..terminal import STEPLINE, Terminal

pytestmark = pytest.mark.e2e


@pytest.mark.usefixtures("no_leftovers")
def test_one_job_per_argument_with_its_output_tagged() -> None:
    proc = stepline("run", "-j", "2", "--", "echo", "file={}", "n={#}", "::: ", ":::", "a", "b c")
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == [
        "a\tfile=a n=1 ::: ",  # only a word that is exactly ::: separates
        "b c\tfile=b c n=2 ::: ",
    ]
    assert proc.stderr == ""


def test_without_braces_the_argument_is_appended() -> None:
    proc = stepline("run", "--", "printf", "%s|", ":::", "x", "y")
    assert sorted(proc.stdout.splitlines()) == ["x\tx|", "y\ty|"]


def test_arguments_from_stdin_one_per_line() -> None:
    proc = stepline("run", "--", "echo", "got {}", stdin="one\n\ntwo words\n")
    assert proc.returncode == 0
    assert sorted(proc.stdout.splitlines()) == ["one\tgot one", "two words\tgot two words"]


def test_a_shell_line_gets_the_argument_quoted() -> None:
    tricky = 'it\'s $HOME; `x` "q"'
    proc = stepline("run", "--", "printf '%s\\n' {} | wc -c", ":::", tricky)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{tricky}\t{len(tricky) + 1}\n"


def test_the_commands_run_in_the_current_directory(tmp_path: Path) -> None:
    proc = stepline("run", "--", "pwd", ":::", "x", cwd=tmp_path)
    assert proc.stdout == f"x\t{tmp_path}\n"


def test_stderr_is_tagged_and_failures_make_the_exit_status(tmp_path: Path) -> None:
    script = 'echo "to stderr" >&2; [ "$1" != bad ]'
    proc = stepline("run", "--", "sh", "-c", script, "sh", ":::", "good", "bad")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert sorted(line for line in lines if "\t" in line) == [
        "bad\tto stderr",
        "good\tto stderr",
    ]
    assert "stepline run: bad: failed: failure at steps[0]: sh exited with status 1" in lines
    assert lines[-1] == "stepline run: 2 jobs: 1 failed, 1 succeeded (not succeeded: bad)"


def test_options_of_the_command_are_the_commands() -> None:
    proc = stepline("run", "--", "sort", "-r", ":::", "-j")  # -j is an argument here, not ours
    assert proc.returncode == 1  # sort -r -j: no such option
    assert "stepline run: -j: failed" in proc.stderr


def test_mistakes_are_refused_before_anything_runs() -> None:
    assert "no command after --" in stepline("run", "--", ":::", "a").stderr
    assert "nothing to run" in stepline("run", "--", "echo", ":::").stderr
    both = stepline("run", "x.json", "--", "echo", ":::", "a")
    assert (both.returncode, both.stderr) == (
        2,
        "stepline run: give job files or -- COMMAND..., not both\n",
    )
    assert "only one ::: group" in stepline("run", "--", "echo", ":::", "a", ":::", "b").stderr


def test_on_a_terminal_without_arguments_it_says_what_to_do() -> None:
    with Terminal([*STEPLINE, "run", "--", "echo"], env=ENV) as term:
        status = term.finish()
        screen = term.text()
    assert status == 2
    assert "no ::: ARG... and stdin is a terminal" in screen
