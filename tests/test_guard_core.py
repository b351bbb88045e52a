"""python -m core guards its inputs: a checkpoint is read as plain data only (one that would run code is refused,
and nothing in it runs); a bad --out, --resume or --inception-weights fails before training with exit code 2 and
one line naming the file and what is wrong; a resume refuses flags that would change its run; Ctrl-C exits 130
saying how to resume, and that resume finishes."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch

from core.__main__ import _CtrlC, main
from core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from core.config import ConfigError, TrainConfig, resolve_config
from core.metrics.images import check_inception_weights
from core.train import train

# 10 warm-up iterations, then 10 of the game with the prior a MoG: the cheapest 2D run that has every phase
SHORT = {"iterations": 20, "warmup": 10, "mog_warmup": 5, "eval_every": 10}


class WritesAFile:
    """Unpickling this calls open(path, "w"): it stands for any code a hostile checkpoint could run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def error_line(capsys) -> str:
    """The CLI's stderr, which must be exactly one line `error: ...` (no traceback)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> dict:
    """A run as `python -m core --budget smoke --iterations 20 --warmup 10 --mog-warmup 5 --eval-every 10 --out`
    leaves it (checkpoint.pt, now at its end), with its checkpoint of iteration 10 and its final state."""
    out = tmp_path_factory.mktemp("finished")
    states = {}
    train(
        resolve_config("8gaussians", "smoke", **SHORT),
        on_checkpoint=lambda s: states.__setitem__(s["unit"], s),
        out_dir=out,
    )
    save_checkpoint(states[10], out / "at-10.pt")
    return {"checkpoint": out / "checkpoint.pt", "at_10": out / "at-10.pt", "final": states[20]}


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a checkpoint (a real config) whose game state runs code when unpickled."""
    config = resolve_config("8gaussians", "smoke", **SHORT).to_dict()
    torch.save({"config": config, "unit": 0, "step": 0, "game": WritesAFile(marker), "rng": {}, "scores": {}}, path)
    return path


# ------------------------------------------------------------------------------------------ plain data only
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_in_it_runs(tmp_path, capsys):
    marker = tmp_path / "marker"
    hostile = hostile_checkpoint(tmp_path / "checkpoint.pt", marker)
    assert main(["--resume", str(hostile), "--out", str(tmp_path / "run")]) == 2
    line = error_line(capsys)
    assert line.startswith(
        f"error: {hostile} is not a priorstudy checkpoint: it contains a reference to io.open, which is not plain data"
    ), line
    assert not marker.exists() and not (tmp_path / "run").exists()
    torch.load(hostile, weights_only=False)  # the file is live: an unguarded load runs it
    assert marker.exists()


def test_a_restored_trial_refuses_the_same_file(tmp_path, monkeypatch):
    from ray import tune

    import study.trainable

    marker = tmp_path / "marker"
    folder = tmp_path / "tune-checkpoint"
    folder.mkdir()
    hostile_checkpoint(folder / study.trainable.STATE_FILE, marker)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(folder)))
    with pytest.raises(CheckpointError, match=r"io\.open, which is not plain data"):
        study.trainable._restore()
    assert not marker.exists()


def test_a_checkpoint_read_back_from_its_file_resumes_exactly(finished_run):
    again = {}
    state = load_checkpoint(finished_run["at_10"])
    train(TrainConfig.from_dict(state["config"]), resume=state, on_checkpoint=lambda s: again.__setitem__(s["unit"], s))
    for player in ("encoder", "decoder", "prior"):
        for name, value in finished_run["final"]["game"][player].items():
            assert torch.equal(value, again[20]["game"][player][name]), f"{player}.{name}"


# ------------------------------------------------------------------------------------------ --out and --resume
@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("/proc/priorstudy-run", "cannot write in /proc"),
        ("/sys/priorstudy-run/deeper", "cannot write in /sys"),
        ("{file}/run", "{file} is a file, not a folder"),
    ],
)
def test_an_out_that_cannot_hold_the_run_fails_before_training(tmp_path, capsys, out, message):
    file = tmp_path / "notes.txt"
    file.write_text("a file, not a folder")
    out = out.format(file=file)
    assert main(["--budget", "smoke", "--out", out]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: --out {out}: {message.format(file=file)}"), line  # then the OS's reason
    assert sorted(tmp_path.iterdir()) == [file]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("truncated", "it is truncated or corrupted (PytorchStreamReader failed reading zip archive"),
        ("text", "it is not a file that torch.save wrote (it starts with b'epoch 10'"),
        ("empty", "the file is empty"),
        ("other torch file", "it holds a dict with keys ['a'], not a training state (a dict with keys config, unit"),
        ("missing", "no such file"),
    ],
)
def test_resuming_what_is_not_a_checkpoint_fails_naming_the_file(tmp_path, capsys, finished_run, kind, reason):
    path = tmp_path / "checkpoint.pt"
    if kind == "truncated":
        data = finished_run["checkpoint"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("epoch 10: loss 0.3\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "other torch file":
        torch.save({"a": 1}, path)
    assert main(["--resume", str(path), "--out", str(tmp_path / "run")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {path} is not a priorstudy checkpoint: {reason}"), line
    assert not (tmp_path / "run").exists()


def test_a_resume_refuses_flags_that_would_change_its_run(finished_run, capsys):
    checkpoint = finished_run["checkpoint"]
    argv = ["--resume", str(checkpoint), "--iterations", "400", "--set", "beta_kl=0.5", "--budget", "smoke"]
    assert main(argv) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: --resume {checkpoint} continues the run its checkpoint holds"), line
    assert "--iterations 400 (checkpoint: 20)" in line and "--beta-kl 0.5 (checkpoint: 0.3)" in line
    assert "--budget smoke (sets " in line and "warmup = 30, checkpoint: 10" in line


def test_a_resume_accepts_the_flags_of_its_own_run_and_where_it_runs(finished_run, tmp_path, capsys):
    out = tmp_path / "again"
    argv = [
        "--resume",
        str(finished_run["checkpoint"]),
        "--budget",
        "smoke",
        "--iterations",
        "20",
        "--warmup",
        "10",
        "--mog-warmup",
        "5",
        "--set",
        "eval_every=10",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["iteration"] == 20
    assert load_checkpoint(out / "checkpoint.pt")["config"]["device"] == "cpu"


# ------------------------------------------------------------------------------------------ Inception weights
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ({"fc.weight": torch.zeros(2, 2)}, "'fc.weight' has shape (2, 2), expected (1008, 2048)"),
        ("text", "it is not a file that torch.save wrote (it starts with b'these ar'"),
    ],
)
def test_a_file_that_is_not_the_inception_weights_fails_before_any_training(tmp_path, capsys, content, reason):
    from study.run import main as study_main

    weights = tmp_path / "pt_inception.pth"
    if content == "text":
        weights.write_text("these are not weights\n")
    else:
        torch.save(content, weights)
    expected = f"inception_weights: {weights} is not pytorch-fid's FID Inception weights: "
    with pytest.raises(ConfigError) as error:
        check_inception_weights(weights)
    assert str(error.value).startswith(expected) and reason in str(error.value), error.value
    out = tmp_path / "run"
    argv = ["--dataset", "digits", "--budget", "smoke", "--inception-weights", str(weights), "--out", str(out)]
    assert main(argv) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {expected}") and reason in line, line
    assert not out.exists()
    code = study_main(
        [
            "--storage",
            str(tmp_path / "ray_results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlruns.db",
            "--space",
            "ablation_images",
            "--dataset",
            "digits",
            "--budget",
            "smoke",
            "--inception-weights",
            str(weights),
        ]
    )
    line = error_line(capsys)
    assert code == 2 and line.startswith(f"error: {expected}") and reason in line, line
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlruns.db").exists()


# ------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_that_lands_in_a_finalizer_still_stops_at_the_next_report():
    """Python drops an exception raised while a finalizer runs (it happened in CI: training ran to its end and exited
    0 after Ctrl-C). The press is remembered and the next report raises it; outside a press a report passes."""

    class Garbage:
        pass

    with _CtrlC() as ctrl_c:
        ctrl_c.check({})
        garbage = Garbage()
        weakref.finalize(garbage, os.kill, os.getpid(), signal.SIGINT)
        del garbage  # the finalizer runs now; the handler's KeyboardInterrupt is printed and dropped
        time.sleep(0.05)
        assert ctrl_c.pressed
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.check({})
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_exits_130_with_the_resume_command_and_that_resume_finishes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core",
            "--budget",
            "smoke",
            "--iterations",
            "300",
            "--warmup",
            "300",
            "--eval-every",
            "50",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():  # the first one comes at iteration 50 of 300
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGINT)  # as Ctrl-C in a terminal: to the whole process group
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    line = next(line for line in err.splitlines() if line.startswith("interrupted"))
    command = f"python -m core --resume {out / 'checkpoint.pt'} --out {out} --threads 1"
    assert line.endswith(f"; continue with: {command}"), line
    # Python prints (and drops) a KeyboardInterrupt that lands in a finalizer; _CtrlC raises it again, no crash
    crash = re.sub(r"Exception ignored in.*?KeyboardInterrupt", "", err, flags=re.S)
    assert "Traceback" not in crash and not (out / "checkpoint.pt.tmp").exists()
    resumed = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]], capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["iteration"] == 300
