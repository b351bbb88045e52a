"""MLflow for a study: one experiment per study (created on the driver), one run per trial (opened by the trial).

A trial's run holds the full resolved config as params, every report as a step series (step = iteration), tags
naming the space, study, trial, commit, project version, device and Ray resources (and `betas_from`: the grid run
its betas came from), and figure.png / metrics.json with samples.npy (2D) or samples.png / reconstructions.png
(images) as artifacts. The trial opens its run with Ray's `setup_mlflow`, and finds it again by its `trial_id` tag
when Tune restores the trial. `TrialRunStatus`, a Tune callback on the driver, closes the runs that a trial could
not close itself (stopped by ASHA, crashed, killed) and records why.

Before a study writes anything, `check_tracking_uri` tries the store as MLflow would use it and fails in seconds,
naming what is wrong. Credentials never reach a record of the study or a message: `adopt_credentials` moves those of
a server URI into MLflow's own MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, `redact` shows a password as ***.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import tempfile
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from ray import tune

from analysis.loading import LOCAL_TRACKING_URI, STUDY_ROLE_TAG, default_tracking_uri  # noqa: F401 (one home)
from core.config import UNIT_NAMES, reported_unit
from core.paths import unwritable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS_DIR = "mlartifacts"
ARTIFACTS = ("figure.png", "metrics.json", "samples.npy", "samples.png", "reconstructions.png")
CHECKPOINT_ARTIFACT = "checkpoint.pt"  # the final training state: python -m core --resume reads it
CHECKPOINT_CHOICES = ("all", "best", "none")  # whose final checkpoint a study keeps in MLflow (--checkpoints)
MAX_TAG_CHARS = 4_000


class TrackingError(RuntimeError):
    """The tracking URI is malformed or its store cannot be reached."""


def absolute_tracking_uri(uri: str) -> str:
    """Make a local store's path absolute: Ray runs each trial in its own working directory."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise TrackingError(f"tracking URI {uri!r} names no database file (expected e.g. sqlite:///mlruns.db)")
        return "sqlite:///" + str(Path(path).resolve()) if not path.startswith("/") else uri
    if parsed.scheme == "file":
        return Path(parsed.path).resolve().as_uri()
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a bare path (or a Windows drive letter)
        return Path(uri).resolve().as_uri()
    return uri


def is_local_store(uri: str) -> bool:
    return urlparse(uri).scheme in ("sqlite", "file")


def redact(uri: str) -> str:
    """The URI as it may be shown: a password becomes *** (http://user:***@host)."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    return urlunparse(parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)))


def adopt_credentials(uri: str) -> str:
    """The URI without user and password, which go to MLflow's own MLFLOW_TRACKING_USERNAME / _PASSWORD for this
    process (and the Ray workers it starts), so that no record of the study (study.json, Tune's tuner.pkl) holds
    them. A database URI's password has no such variable: refused."""
    parsed = urlparse(uri)
    if parsed.username is None and parsed.password is None:
        return uri
    if parsed.scheme not in ("http", "https"):
        if parsed.password is None:
            return uri
        raise TrackingError(
            f"tracking URI {redact(uri)} holds a password, which every record of the study would "
            "keep; give it to the database driver instead (PostgreSQL: PGPASSWORD or ~/.pgpass) or "
            "track to an MLflow server (http://HOST:5000 with MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD)"
        )
    if parsed.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = parsed.username
    if parsed.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = parsed.password
    return urlunparse(parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[1]))


def credential_env() -> dict[str, str]:
    """MLflow's credential variables of this process, for Ray workers on other machines."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
    return {name: os.environ[name] for name in names if name in os.environ}


def artifact_location(uri: str) -> str | None:
    """Local stores keep artifacts in `mlartifacts/` beside the database; a server decides for itself."""
    if urlparse(uri).scheme == "sqlite":
        return (Path(uri[len("sqlite:///") :]).parent / ARTIFACTS_DIR).as_uri()
    return None


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before Ray starts and before MLflow touches the store, when the store cannot be used: a scheme
    MLflow has no store for, a database driver that is not installed, a local store in a folder that cannot be
    written (MLflow would retry for minutes), a server that does not answer or refuses the credentials. Messages
    show the URI redacted."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.db.db_types import DATABASE_ENGINES
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
    from mlflow.utils.uri import get_uri_scheme

    shown = redact(uri)
    try:
        scheme = get_uri_scheme(uri)
        _tracking_store_registry.get_store_builder(uri)
    except UnsupportedModelRegistryStoreURIException as err:
        known = ", ".join(s for s in err.supported_uri_schemes if s)
        raise TrackingError(
            f"tracking URI {shown}: MLflow has no store for scheme {urlparse(uri).scheme!r} "
            f"(it knows: {known}; e.g. sqlite:///mlruns.db or http://HOST:5000)"
        ) from None
    except MlflowException as err:
        raise TrackingError(f"tracking URI {shown}: {redact(err.message)}") from None
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif scheme == "sqlite":
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir():
            raise TrackingError(f"tracking URI {shown}: folder {folder} does not exist")
        problem = unwritable(folder)
        if problem:
            raise TrackingError(f"tracking URI {shown}: {problem}")
    elif scheme in DATABASE_ENGINES:
        from sqlalchemy.engine import make_url

        dialect = make_url(uri).get_dialect()
        try:
            dialect.import_dbapi()
        except ImportError as err:
            hint = " (PostgreSQL: pip install -e '.[cluster]')" if dialect.name == "postgresql" else ""
            raise TrackingError(
                f"tracking URI {shown} needs the database driver {dialect.driver} ({err}); install "
                f"it{hint}, or track to an MLflow server (--tracking-uri http://HOST:5000)"
            ) from None
    elif scheme in ("", "file"):
        problem = unwritable(Path(urlparse(uri).path))
        if problem:
            raise TrackingError(f"tracking URI {shown}: {problem}")


def _check_server(uri: str, timeout: float) -> None:
    """The server answers /health, and an API call with the credentials of the URI or of MLflow's variables (a
    server with authentication answers /health to anyone)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    parsed, shown = urlparse(uri), redact(uri)
    bare = urlunparse(parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[-1])).rstrip("/")
    try:
        with urllib.request.urlopen(bare + "/health", timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow server at {shown} answered /health with HTTP {response.status}")
    except urllib.error.HTTPError as err:
        raise TrackingError(f"{shown} answered /health with HTTP {err.code}: is it an MLflow server?") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {shown} ({reason}); start it with "
            f"`mlflow server --host ... --port ...` or pass another --tracking-uri"
        ) from None
    creds = get_default_host_creds(bare)
    if parsed.username is not None:
        creds.username, creds.password = parsed.username, parsed.password
    try:
        response = http_request(
            creds,
            "/api/2.0/mlflow/experiments/search",
            "GET",
            max_retries=0,
            timeout=timeout,
            params={"max_results": 1},
        )
    except (MlflowException, OSError) as err:
        raise TrackingError(f"MLflow server at {shown} answered /health but not its API ({redact(str(err))})") from None
    if response.status_code == 401:
        raise TrackingError(
            f"MLflow server at {shown} refused the credentials (HTTP 401): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a study never saves them)"
        )
    if response.status_code == 403:  # also MLflow's answer to a host name outside its --allowed-hosts
        said = (response.text.strip().splitlines() or ["no reason given"])[0][:200]
        raise TrackingError(
            f"MLflow server at {shown} refused the request (HTTP 403: {said}): the user may not "
            "read experiments, or the server does not accept this host name (mlflow server "
            "--allowed-hosts)"
        )


def ensure_experiment(uri: str, name: str) -> str:
    """The study's experiment id, creating the experiment here on the driver (trials racing to create it fail)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=artifact_location(uri))
    except MlflowException as err:
        raise TrackingError(f"MLflow store {redact(uri)}: {err.message}") from None


def _parent_tag(study: Mapping[str, Any]) -> dict[str, str]:
    return {"mlflow.parentRunId": study["parent_run_id"]} if study.get("parent_run_id") else {}


def open_study_run(study: Mapping[str, Any], params: Mapping[str, Any], description: str) -> str:
    """Create the study's parent run on the driver (its trials' runs nest under it in MLflow's UI): the study's tags,
    its request as params, and `description` (what the study compares) as the run's note; returns its id."""
    from mlflow.entities import Param

    client = _client(study["tracking_uri"])
    tags = {**study["tags"], "study_id": study["study_id"], STUDY_ROLE_TAG: "study", "mlflow.note.content": description}
    run = client.create_run(study["experiment_id"], run_name=f"study {study['name']}", tags=tags)
    client.set_experiment_tag(study["experiment_id"], "mlflow.note.content", description)  # the experiment's too
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params_of(params).items()])
    return run.info.run_id


def reopen_study_run(study: Mapping[str, Any]) -> None:
    """--resume: the parent run is RUNNING again while the study runs."""
    if study.get("parent_run_id"):
        _client(study["tracking_uri"]).update_run(study["parent_run_id"], status="RUNNING")


def close_study_run(
    study: Mapping[str, Any], counts: Mapping[str, int], best: Mapping[str, Any] | None, interrupted: bool
) -> None:
    """End the parent run with the trial counts as metrics and the best configuration as tags (KILLED when the
    study was interrupted: --resume reopens it)."""
    if not study.get("parent_run_id"):
        return
    client, run_id = _client(study["tracking_uri"]), study["parent_run_id"]
    for name, value in counts.items():
        client.log_metric(run_id, f"trials_{name}", value)
    for key, value in (best or {}).items():
        client.set_tag(run_id, f"best.{key}", str(value)[:MAX_TAG_CHARS])
    client.set_terminated(run_id, status="KILLED" if interrupted else "FINISHED")


def log_final_checkpoint(study: Mapping[str, Any], trial_id: str, state: Path) -> None:
    """--checkpoints best: a trial's final training state (the file `state`) as its run's checkpoint.pt."""
    run = find_trial_run(study["tracking_uri"], study["experiment_id"], study["study_id"], trial_id)
    if run is None or not state.is_file():
        return
    with tempfile.TemporaryDirectory() as staging:
        shutil.copyfile(state, Path(staging) / CHECKPOINT_ARTIFACT)
        _client(study["tracking_uri"]).log_artifact(run.info.run_id, str(Path(staging) / CHECKPOINT_ARTIFACT))


def find_study_run(uri: str, experiment_id: str, study_id: str):
    """The parent run of a study, or None (studies tracked before parent runs existed have none)."""
    runs = _client(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.study_id = '{study_id}' and tags.`{STUDY_ROLE_TAG}` = 'study'",
        max_results=1,
    )
    return runs[0] if runs else None


def project_tags() -> dict[str, str]:
    """Commit and version of the code that launched the study (gathered on the driver: workers may lack git)."""
    tags = {
        "git_commit": "unknown",
        "project_version": _project_version(),
        "mlflow.source.name": "study.run",
        "mlflow.source.type": "LOCAL",
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            )
            tags["git_commit"] = commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
            tags["mlflow.source.git.commit"] = commit.stdout.strip()  # MLflow's own: the UI's Version column
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def _project_version() -> str:
    try:
        return importlib.metadata.version("priorstudy")
    except importlib.metadata.PackageNotFoundError:
        pyproject = PROJECT_ROOT / "pyproject.toml"
        if pyproject.is_file():
            return str(tomllib.loads(pyproject.read_text()).get("project", {}).get("version", "unknown"))
        return "unknown"


def runs_table_path(experiment_id: str) -> str:
    """The MLflow UI's page of an experiment's runs table. MLflow 3 opens an experiment without `workflowType` in
    its GenAI (traces) view, where no trial shows."""
    return f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def mlflow_ui_hint(uri: str, experiment_id: str | None = None) -> str:
    """How to open the study's runs in MLflow's UI: the server's URL, or `mlflow ui` on a local store and then its
    URL (127.0.0.1:5000, mlflow ui's default)."""
    page = runs_table_path(experiment_id) if experiment_id else "/"
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {redact(uri).rstrip('/')}{page} in a browser (the MLflow server's UI)"
    return f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000{page}"


def params_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """MLflow params: strings for everything that is not a scalar (lists, dicts, None)."""
    return {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in config.items()}


def metrics_of(report: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a report (booleans as 0/1), without the step bookkeeping."""
    return {k: float(v) for k, v in report.items() if isinstance(v, (int, float)) and k not in ("done",)}


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def find_trial_run(uri: str, experiment_id: str, study_id: str, trial_id: str):
    """The MLflow run of a trial of this study, or None."""
    runs = _client(uri).search_runs(
        [experiment_id], filter_string=f"tags.study_id = '{study_id}' and tags.trial_id = '{trial_id}'", max_results=1
    )
    return runs[0] if runs else None


class TrialRun:
    """The active MLflow run of the trial running in this process (fluent API, one trial per Ray actor)."""

    def __init__(self, mlflow, uri: str, run_id: str, logged_until: int):
        self.mlflow = mlflow
        self.uri = uri
        self.run_id = run_id
        self.logged_until = logged_until

    @classmethod
    def open(
        cls,
        study: Mapping[str, Any],
        trial_id: str,
        trial_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
    ) -> TrialRun:
        """Start the trial's run, or reopen it when Tune restores the trial (then metrics already logged up to
        `logged_until` are not logged twice: resumed training recomputes them exactly)."""
        import mlflow
        from ray.air.integrations.mlflow import setup_mlflow

        uri = study["tracking_uri"]
        existing = find_trial_run(uri, study["experiment_id"], study["study_id"], trial_id)
        if existing is not None:
            mlflow.set_tracking_uri(uri)
            mlflow.start_run(run_id=existing.info.run_id)
            client = _client(uri)
            steps = [m.step for name in UNIT_NAMES for m in client.get_metric_history(existing.info.run_id, name)]
            return cls(mlflow, uri, existing.info.run_id, max(steps, default=-1))
        all_tags = {
            **study["tags"],
            **_parent_tag(study),
            "study_id": study["study_id"],
            "trial_id": trial_id,
            "trial_name": trial_name,
            **tags,
        }
        module = setup_mlflow(
            tracking_uri=uri, experiment_id=study["experiment_id"], run_name=trial_name, tags=all_tags
        )
        module.log_params(params_of(params))  # one batch; setup_mlflow(config=...) logs them one by one
        return cls(module, uri, module.active_run().info.run_id, -1)

    def log_report(self, report: Mapping[str, Any]) -> None:
        step = int(reported_unit(report))
        if step > self.logged_until:
            self.mlflow.log_metrics(metrics_of(report), step=step)
            self.logged_until = step

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.mlflow.log_metrics(dict(metrics), step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v)[:MAX_TAG_CHARS] for k, v in tags.items()})

    def log_artifacts(self, folder: Path, checkpoint: bool) -> None:
        for name in ARTIFACTS + ((CHECKPOINT_ARTIFACT,) if checkpoint else ()):
            if (folder / name).is_file():
                self.mlflow.log_artifact(str(folder / name))

    def finish(self) -> None:
        """End the run as FINISHED; a failure recorded by an earlier attempt of this trial (Tune's max_failures
        retries) no longer describes it."""
        if "failure_reason" in _client(self.uri).get_run(self.run_id).data.tags:
            self.mlflow.delete_tag("failure_reason")
        self.mlflow.end_run(status="FINISHED")

    def fail(self, reason: str) -> None:
        self.set_tags({"failure_reason": reason})
        self.mlflow.end_run(status="FAILED")


class TrialRunStatus(tune.Callback):
    """On the driver: close the MLflow run of each trial that ended, with the status Tune gave it.

    A trial that finishes closes its own run; this covers trials stopped early by the scheduler (FINISHED, tag
    stopped_early), crashed or killed ones (FAILED, tag failure_reason from Tune's error), and trials that died
    before opening a run (one is created, so every trial has a run).
    """

    def __init__(self, study: Mapping[str, Any]):
        self.study = dict(study)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, "FAILED")

    def _close(self, trial, status: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._close_run(trial, status)
        except MlflowException as err:  # tracking trouble must not stop the study
            print(f"warning: could not record trial {trial.trial_id} in MLflow: {err.message}")

    def _close_run(self, trial, status: str) -> None:
        from search_spaces.space import resolve_trial, searched_params, variant_tags

        uri, client = self.study["tracking_uri"], _client(self.study["tracking_uri"])
        run = find_trial_run(uri, self.study["experiment_id"], self.study["study_id"], trial.trial_id)
        if run is None:
            tags = {
                **self.study["tags"],
                **_parent_tag(self.study),
                "study_id": self.study["study_id"],
                "trial_id": trial.trial_id,
                "trial_name": str(trial),
                **variant_tags(self.study, trial.config),
            }
            run = client.create_run(self.study["experiment_id"], run_name=str(trial), tags=tags)
            params = {**resolve_trial(self.study, trial.config).to_dict(), **searched_params(self.study, trial.config)}
            from mlflow.entities import Param

            client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params_of(params).items()])
        elif run.info.status != "RUNNING":
            return
        run_id = run.info.run_id
        if status == "FAILED":
            if "failure_reason" not in run.data.tags:
                client.set_tag(run_id, "failure_reason", _error_summary(trial)[:MAX_TAG_CHARS])
        else:
            client.set_tag(run_id, "stopped_early", "true")
        client.set_terminated(run_id, status=status)


def _error_summary(trial) -> str:
    """The last line of the trial's error (the exception and its message), or a pointer to the error file."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return f"trial {trial.trial_id} failed (see Tune's error file in its trial directory)"
