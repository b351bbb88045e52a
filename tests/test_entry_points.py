"""The console commands the package installs (pyproject's [project.scripts]) run the same programs as the
`python -m` forms."""

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ("priorstudy-study", ["--list"], "learnable_prior"),
        ("priorstudy-train", ["--help"], "--prior"),
        ("priorstudy-report", ["--help"], "--study"),
    ],
)
def test_console_commands_run_the_clis(command, args, expected):
    done = subprocess.run([str(BIN / command), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout


def test_a_console_command_keeps_the_exit_code_of_a_bad_request():
    done = subprocess.run(
        [str(BIN / "priorstudy-study"), "--space", "no_such_space", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "no_such_space" in done.stderr
