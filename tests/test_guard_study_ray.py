"""A study's Ray and processes: token auth keeps strangers out of a local study's Ray, --resume refuses while the
last run's driver or workers live, a trial whose driver is gone stops before it writes, and an interrupted study
ranks only its finished trials and exits 130. (Ctrl-C and kill -9 of a real study, then its resume:
tests/test_study_e2e.py.)"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from search_spaces import design, get
from study import driver
from study.run import build_parser, connect_ray, exit_code, main, resume_command, summarize
from study.storage import StudyFolder

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import ray
try:
    ray.init(address={address!r})
except ConnectionError:
    print("refused")
else:
    print("ran", ray.get(ray.remote(lambda: 42).remote()))
"""


def test_a_local_study_ray_refuses_a_process_without_its_token(tmp_path):
    """The Ray a local study starts (study.run.connect_ray) runs a task of the study and of a process with the
    token; a process without it (no RAY_AUTH_* and an empty home, so no ~/.ray/auth_token) cannot join."""
    import ray

    assert not ray.is_initialized()
    connect_ray(None)
    try:
        assert ray.get(ray.remote(lambda: 7).remote()) == 7
        probe = PROBE.format(address=ray.get_runtime_context().gcs_address)
        stranger = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        stranger.update(HOME=str(tmp_path), RAY_gcs_server_port_wait_time_s="2")  # gives up in 2 s, not 20
        with_token = dict(os.environ)
        assert "RAY_AUTH_TOKEN_PATH" in with_token or "RAY_AUTH_TOKEN" in with_token  # tests/conftest.py
        children = [
            subprocess.Popen(
                [sys.executable, "-c", probe], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for env in (stranger, with_token)
        ]
        outputs = [child.communicate(timeout=180)[0] for child in children]
    finally:
        ray.shutdown()
    assert outputs[0].split()[-1:] == ["refused"], outputs[0][-2000:]
    assert "InvalidAuthToken" in outputs[0] or "Unauthenticated" in outputs[0], outputs[0][-2000:]
    assert outputs[1].split()[-2:] == ["ran", "42"], outputs[1][-2000:]


def test_the_token_a_local_study_writes_is_readable_by_its_owner_only(tmp_path, monkeypatch):
    from study import ray_auth

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "ray" / "auth_token"))
    ray_auth.ensure_token()
    token = (tmp_path / "ray" / "auth_token").read_text()
    assert len(token) == 64 and (tmp_path / "ray" / "auth_token").stat().st_mode & 0o777 == 0o600
    ray_auth.ensure_token()
    assert (tmp_path / "ray" / "auth_token").read_text() == token  # kept, never replaced


def study_folder(storage: Path, name: str, last_driver: dict, workers: list[dict]) -> Path:
    """A study's record as study.run writes it, and the record of its last run's processes."""
    folder = storage / name
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(
        json.dumps(
            {
                "space": "ablation_regularizers",
                "dataset": "8gaussians",
                "budget": "smoke",
                "seeds": [0],
                "samples": None,
                "overrides": {},
                "study": {},
            }
        )
    )
    driver.write(StudyFolder.of(storage, name), last_driver, workers)
    return folder


def test_resume_refuses_while_the_last_run_lives(tmp_path, monkeypatch, capsys):
    """The last run's driver and one worker still live (real processes: the check reads their PIDs and start
    times), another worker has ended: --resume waits, then refuses with exit 2, naming the live ones."""
    monkeypatch.setattr(driver, "END_WAIT_S", 1.0)
    old_driver, old_worker, ended = (subprocess.Popen(["sleep", "600"]) for _ in range(3))
    ended.kill()
    try:
        records = [driver.identity(p.pid) for p in (old_driver, old_worker)]
        ended_record = {**records[0], "pid": ended.pid}
        ended.wait()
        last = {**records[0], "host": "vm", "started_at": "2026-12-03T14:11:49"}
        study_folder(tmp_path, "s", last, [records[1], ended_record])
        code = main(["--resume", "--name", "s", "--space", "ablation_regularizers", "--storage", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith(
            f"error: study 's' still has live processes from its run by PID {old_driver.pid} "
            "(started 2026-12-03T14:11:49 on vm)"
        ), err
        assert f"driver {old_driver.pid}, trial worker {old_worker.pid}; " in err
        assert err.rstrip().endswith(f"kill -9 {old_driver.pid} {old_worker.pid}") and str(ended.pid) not in err
    finally:
        for p in (old_driver, old_worker):
            p.kill()
            p.wait()
    assert driver.wait_for_end(StudyFolder.of(tmp_path, "s"))[1] == []


ORPHAN = """
from study.driver import exit_if_orphaned, identity
exit_if_orphaned({{**identity({alive}), "host": "h", "started_at": "t"}})
print("driver alive: wrote", flush=True)
exit_if_orphaned({{**identity({alive}), "pid": {gone}, "host": "h", "started_at": "t"}})
print("driver gone: wrote", flush=True)
"""


def test_a_trial_whose_driver_is_gone_stops_before_it_writes(tmp_path):
    """exit_if_orphaned (called by the trainable before each of its writes to MLflow) lets a trial of a live
    driver go on and ends the process of one whose driver has ended."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    code = ORPHAN.format(alive=os.getpid(), gone=gone.pid)
    child = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 1, child.stdout + child.stderr
    assert child.stdout.splitlines() == ["driver alive: wrote"]
    assert f"the study's driver (PID {gone.pid}) is gone; this trial stops without writing" in child.stderr


def test_an_interrupted_study_ranks_only_its_finished_trials_and_exits_130(tmp_path):
    """After Ctrl-C, Tune's results hold a finished trial, a running one and not the trials it had not created: the
    summary ranks the first only, and exit_code and the resume command say what to do."""
    d = design(get("learnable_prior"), "8gaussians", "smoke", seeds=(0, 1))  # 4 trials
    finished = SimpleNamespace(
        error=None,
        metrics={"kl": 2.0, "iteration": 60, "done": True},
        config={"variant": "standard", "seed": 0},
        path="/r/train_trial_a_00000",
    )
    running = SimpleNamespace(
        error=None,
        metrics={"kl": 9.0, "iteration": 20, "done": False},
        config={"variant": "learnable", "seed": 0},
        path="/r/train_trial_a_00001",
    )
    results, interrupted = [finished, running], {"train_trial_a_00001"}  # the folder of a trial left RUNNING
    assert exit_code(results, d.trial_count, interrupted) == 130 and exit_code([finished], d.trial_count) == 130
    assert exit_code([finished] * 4, d.trial_count) == 0
    text = summarize(results, d, {"name": "s", "tracking_uri": "sqlite:///x.db"}, tmp_path, interrupted=interrupted)
    assert "trials finished: 1, failed: 0, interrupted: 1, not started: 2;" in text
    assert "n=1)  variant=standard" in text and "variant=learnable" not in text and "kl 9" not in text
    assert "  train_trial_a_00001: at iteration 20" in text
    args = build_parser().parse_args(["--space", "learnable_prior", "--storage", "results", "--gpus-per-trial", "0.5"])
    assert shlex.split(resume_command(args, "s")) == [
        "python",
        "-m",
        "study.run",
        "--resume",
        "--name",
        "s",
        "--storage",
        str(Path("results").resolve()),
        "--gpus-per-trial",
        "0.5",
    ]
