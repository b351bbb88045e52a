"""`python -m study.run` when something is wrong: a bad request exits 2 with one `error:` line and leaves nothing
behind (no study folder, no study.json, no MLflow store or experiment); credentials never reach a message or a
record; a study whose trials failed exits 3 (none finished) or 4 (some failed) and names them."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from ray.tune.experiment import Experiment
from ray.tune.search.basic_variant import BasicVariantGenerator

from search_spaces import design, get
from study.run import build_parser, check_study, exit_code, main, open_study, prepare, summarize
from study.tracking import TrackingError, adopt_credentials

ROOT = Path(__file__).resolve().parent.parent
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
SECRET = "s3cret-pw"


def run_cli(tmp_path: Path, capsys, *args: str, tracking: bool = True) -> tuple[int, str, str]:
    store = ["--tracking-uri", f"sqlite:///{tmp_path}/mlruns.db"] if tracking else []
    code = main(["--storage", str(tmp_path / "ray_results"), *store, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_error_line(err: str, first: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert first in err, err


def assert_nothing_left(tmp_path: Path) -> None:
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlruns.db").exists()
    assert not (tmp_path / "mlartifacts").exists()


@pytest.mark.parametrize(
    ("args", "first"),
    [
        (
            ["--tracking-uri", "garbage://x"],
            "error: tracking URI garbage://x: MLflow has no store for scheme 'garbage'",
        ),
        (
            ["--tracking-uri", "postgresql://u@h/db"],
            "error: tracking URI postgresql://u@h/db needs the database driver psycopg (No module named 'psycopg'); "
            "install it (PostgreSQL: pip install -e '.[cluster]')",
        ),
        (["--tracking-uri", "sqlite:////sys/x.db"], "error: tracking URI sqlite:////sys/x.db: cannot write in /sys"),
        (["--storage", "/sys/x"], "error: --storage /sys/x: cannot write in /sys"),
        (["--max-failures", "-5"], "error: --max-failures -5 must be at least 0"),
    ],
)
def test_an_unusable_store_or_value_fails_in_seconds_and_leaves_nothing(tmp_path, capsys, args, first):
    start = time.perf_counter()
    code, _, err = run_cli(tmp_path, capsys, "--space", "learnable_prior", "--budget", "smoke", *args)
    assert code == 2
    assert_one_error_line(err, first)
    assert time.perf_counter() - start < 30  # sqlite in a folder it cannot write: MLflow retried for 106 s
    assert_nothing_left(tmp_path)
    assert not ray.is_initialized()


def test_a_misspelled_space_or_key_gets_a_suggestion_and_internal_keys_stay_hidden(tmp_path, capsys):
    code, _, err = run_cli(tmp_path, capsys, "--space", "ablation_regularisers")
    assert code == 2
    assert_one_error_line(err, "unknown search space 'ablation_regularisers' (did you mean 'ablation_regularizers'?")
    code, _, err = run_cli(tmp_path, capsys, "--space", "betas", "--set", "beta_kll=1", "--dry-run")
    assert code == 2
    assert_one_error_line(err, "unknown config key(s) ['beta_kll'] (did you mean 'beta_kl'? known keys: alpha,")
    assert "extra" not in err
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize(
    ("space", "dataset", "seeds"),
    [("ablation_regularizers", "8gaussians", "0,1"), ("ablation_images", "digits", "0,1")],
)
def test_dry_run_numbers_trials_as_tune_does(tmp_path, capsys, space, dataset, seeds):
    """Tune's BasicVariantGenerator on the study's own param_space (and the preset points of a narrowed grid)."""
    code, out, _ = run_cli(
        tmp_path, capsys, "--space", space, "--dataset", dataset, "--budget", "smoke", "--seeds", seeds, "--dry-run"
    )
    assert code == 0
    listed = [line.split(": ", 1)[1].split("  ->")[0] for line in out.splitlines() if line.startswith("  trial ")]
    d = design(get(space), dataset, "smoke", seeds=tuple(int(s) for s in seeds.split(",")))
    presets = d.preset_points()
    generator = BasicVariantGenerator(points_to_evaluate=presets)
    generator.add_configurations(
        [
            Experiment(
                "order",
                lambda config: None,
                config=d.param_space(),
                num_samples=len(presets or [None]),
                storage_path=str(tmp_path),
            )
        ]
    )
    tune_order = []
    while (trial := generator.next_trial()) is not None:
        tune_order.append(", ".join(f"{k}={trial.config[k]}" for k in d.grid_points()[0]))
    assert len(listed) == d.trial_count and listed == tune_order


class AuthMlflow(BaseHTTPRequestHandler):
    """Just enough of an MLflow server behind basic auth (user / SECRET) for the driver's checks and experiment."""

    expected = "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self._answer(200, {})
        if not self.headers.get("Host", "").startswith("127.0.0.1:"):  # as MLflow outside its --allowed-hosts
            return self._answer(403, {"message": "Invalid Host header"})
        if self.headers.get("Authorization") != self.expected:
            return self._answer(401, {"error_code": "UNAUTHENTICATED", "message": "wrong credentials"})
        if self.path.startswith("/api/2.0/mlflow/experiments/get-by-name"):
            return self._answer(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such experiment"})
        return self._answer(200, {"experiments": []})

    def do_POST(self):
        if self.headers.get("Authorization") != self.expected:
            return self._answer(401, {"error_code": "UNAUTHENTICATED", "message": "wrong credentials"})
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        return self._answer(200, {"experiment_id": "7"})

    def log_message(self, *args):
        pass


@pytest.fixture
def auth_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), AuthMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_credentials_in_the_tracking_uri_are_never_shown_or_saved_and_resume_takes_them_from_mlflows_variables(
    tmp_path, capsys, monkeypatch, auth_server
):
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    storage = ["--storage", str(tmp_path / "ray_results")]
    port = auth_server.rsplit(":", 1)[1]
    code, _, err = run_cli(
        tmp_path,
        capsys,
        "--space",
        "learnable_prior",
        "--tracking-uri",
        f"http://user:{SECRET}@localhost:{port}",
        tracking=False,
    )
    assert code == 2 and SECRET not in err
    assert_one_error_line(
        err,
        f"error: MLflow server at http://user:***@localhost:{port} refused the request (HTTP "
        '403: {"message": "Invalid Host header"}): the user may not read experiments, or the '
        "server does not accept this host name",
    )
    code, _, err = run_cli(
        tmp_path,
        capsys,
        "--space",
        "learnable_prior",
        "--tracking-uri",
        f"http://user:wrong-{SECRET}@{auth_server}",
        tracking=False,
    )
    assert code == 2 and "wrong" not in err and SECRET not in err
    assert_one_error_line(
        err,
        f"error: MLflow server at http://user:***@{auth_server} refused the credentials (HTTP "
        "401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
    )
    assert_nothing_left(tmp_path)

    args = build_parser().parse_args(
        [
            "--space",
            "learnable_prior",
            "--budget",
            "smoke",
            "--name",
            "auth",
            *storage,
            "--tracking-uri",
            f"http://user:{SECRET}@{auth_server}",
        ]
    )
    d, name, path = prepare(args)
    study = open_study(args, d, name, path, check_study(args, name, path))
    saved = path.read_text("study.json")
    assert study["tracking_uri"] == json.loads(saved)["study"]["tracking_uri"] == f"http://{auth_server}"
    assert study["experiment_id"] == "7"  # created through the server with the URI's credentials
    assert SECRET not in saved and "user:" not in saved
    assert "the credentials in --tracking-uri are not saved" in capsys.readouterr().out

    for var in CREDENTIAL_VARS:  # a new shell: --resume needs MLflow's variables (the study folder names the rest)
        monkeypatch.delenv(var, raising=False)
    code, _, err = run_cli(tmp_path, capsys, "--resume", "--name", "auth", tracking=False)
    assert code == 2
    assert_one_error_line(err, f"error: MLflow server at http://{auth_server} refused the credentials (HTTP 401)")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    code, _, err = run_cli(tmp_path, capsys, "--resume", "--name", "auth", tracking=False)
    assert code == 2  # past the tracking store: this study never ran, so Tune has nothing to restore
    assert_one_error_line(err, "study 'auth' at")
    assert "stopped before Tune saved any state" in err and SECRET not in err


def test_a_database_password_is_refused_and_never_shown(monkeypatch):
    """MLflow has no variable for a database password: every record of the study would keep the URI's."""
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(TrackingError, match=r"tracking URI postgresql://u:\*\*\*@h/db holds a password") as err:
        adopt_credentials(f"postgresql://u:{SECRET}@h/db")
    assert SECRET not in str(err.value)
    assert adopt_credentials("postgresql://u@h/db") == "postgresql://u@h/db"


def test_resume_reads_space_dataset_and_budget_from_the_study(tmp_path, capsys):
    args = build_parser().parse_args(
        [
            "--space",
            "learnable_prior",
            "--dataset",
            "rings",
            "--budget",
            "smoke",
            "--name",
            "mine",
            "--storage",
            str(tmp_path / "ray_results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlruns.db",
        ]
    )
    d, name, path = prepare(args)
    open_study(args, d, name, path, check_study(args, name, path))
    code, _, err = run_cli(tmp_path, capsys, "--resume", "--name", "mine")  # no --space, --dataset, --budget
    assert code == 2 and "stopped before Tune saved any state" in err, err  # the record was read: past prepare


def test_exit_code_and_summary_name_the_failed_trials(tmp_path):
    d = design(get("learnable_prior"), "8gaussians", "smoke", seeds=(0,))  # the two trials below
    error = RuntimeError("training diverged at iteration 3: loss_encoder = nan\nmore")
    ok = SimpleNamespace(
        error=None,
        metrics={"kl": 2.0, "done": True},
        config={"variant": "standard", "seed": 0},
        path="/r/train_trial_a_00000",
    )
    bad = SimpleNamespace(
        error=error, metrics={}, config={"variant": "learnable", "seed": 0}, path="/r/train_trial_a_00001"
    )
    assert exit_code([ok, ok]) == 0 and exit_code([ok, bad]) == 4 and exit_code([bad, bad]) == 3
    text = summarize([ok, bad], d, {"name": "s", "tracking_uri": "sqlite:///x.db"}, tmp_path)
    assert "trials finished: 1, failed: 1" in text
    assert "  train_trial_a_00001: RuntimeError: training diverged at iteration 3: loss_encoder = nan" in text
    assert "more" not in text and "1 of 2 trials failed (exit code 4)" in text


def test_summary_counts_trials_asha_stopped_apart_and_does_not_rank_them(tmp_path):
    d = design(get("betas"), "8gaussians", "smoke", samples=2)  # smoke: 60 iterations
    point = {"seed": 0, "beta_rec": 0.5, "beta_kl": 0.2, "beta_neg_multiple": 2}
    done = SimpleNamespace(error=None, metrics={"kl": 9.0, "iteration": 60}, config=point, path="/r/t_0")
    cut = SimpleNamespace(
        error=None, metrics={"kl": 1.0, "iteration": 20}, config={**point, "beta_kl": 0.9}, path="/r/t_1"
    )
    text = summarize([done, cut], d, {"name": "s", "tracking_uri": "sqlite:///x.db", "study_id": "i"}, tmp_path)
    assert "trials finished: 1, failed: 0, stopped early by ASHA: 1;" in text
    assert "kl 9 (std 0, n=1)" in text and "kl 1 " not in text


@pytest.fixture(scope="module")
def cpu_ray():
    """One local Ray without GPUs for this module's two Ray checks; workers import the project via PYTHONPATH."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        ray.init(address="local", include_dashboard=False, num_cpus=2, num_gpus=0)
        yield
        ray.shutdown()


def test_a_gpu_the_cluster_lacks_is_refused_before_the_study_is_written(cpu_ray, tmp_path, capsys):
    code, _, err = run_cli(tmp_path, capsys, "--space", "learnable_prior", "--budget", "smoke", "--gpus-per-trial", "1")
    assert code == 2
    assert_one_error_line(err, "error: --gpus-per-trial 1: the Ray cluster has 0 GPUs")
    assert_nothing_left(tmp_path)  # so the same command runs once a GPU is there


def test_a_study_where_no_trial_finishes_exits_3_naming_why(cpu_ray, tmp_path, capsys):
    code, out, _ = run_cli(
        tmp_path,
        capsys,
        "--space",
        "learnable_prior",
        "--budget",
        "smoke",
        "--seeds",
        "1",
        "--set",
        "variant=learnable",
        "--set",
        "lr=1e6",
    )
    assert code == 3, out[-3000:]
    assert "trials finished: 0, failed: 1" in out
    failed = out.split("failed trials:\n", 1)[1].splitlines()[0]
    assert failed.startswith("  train_trial_") and ": TrialDiverged: training diverged at iteration " in failed, out
    assert "no trial finished (exit code 3)" in out
