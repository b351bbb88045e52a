"""docker/: no Docker engine runs here, so the images and the compose file are kept correct by reading them.

The compose file is parsed and checked (services, images, build files, ports, volumes, healthchecks, dependency
order), and every command in it is parsed by the program that will run it: `mlflow server` and `ray start` by
their own click commands, `python -m study.run` by its argparse parser and search-space registry.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import mlflow.cli
import pytest
import ray.scripts.scripts as ray_cli
import yaml

from search_spaces import get
from study.run import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
JOBS = {"study"}  # one-shot services: no healthcheck, others wait on them never
BIND = "${PRIORSTUDY_BIND:-127.0.0.1}"  # published ports: this host only, unless PRIORSTUDY_BIND says otherwise
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def command(service: str) -> list[str]:
    spec = SERVICES[service]
    entry = spec.get("entrypoint", [])
    cmd = spec["command"]
    return list(entry) + (shlex.split(cmd) if isinstance(cmd, str) else list(cmd))


def published(service: str, port: int) -> bool:
    return f"{BIND}:{port}:{port}" in SERVICES[service]["ports"]


def click_params(cli, prog: str, args: list[str]) -> dict:
    """Parse `args` with the program's own click command (raises on an unknown option or a bad value)."""
    return cli.make_context(prog, list(args)).params


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DOCKER / name).read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            rows.append((instruction.upper(), rest.strip()))
    return rows


def installed_requirements(name: str) -> list[str]:
    """What the image's `pip install -r /tmp/requirements.txt` installs: its `python -c` program run on the
    repository's pyproject.toml."""
    runs = " ".join(args for op, args in dockerfile(name) if op == "RUN")
    program = re.search(r'python -c "(.*?)" +> /tmp/requirements.txt', runs).group(1)
    program = program.replace("/tmp/pyproject.toml", str(ROOT / "pyproject.toml"))
    assert "pip install -r /tmp/requirements.txt" in runs
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout.split()


def test_compose_has_the_cluster_the_tracking_server_and_its_database():
    assert {"postgres", "mlflow", "ray-head", "ray-worker", "ray-worker-gpu", "study"} <= set(SERVICES)
    assert set(COMPOSE["volumes"]) == {"pgdata", "mlartifacts", "ray_results"}
    assert SERVICES["postgres"]["image"].split(":")[1] != "latest"
    for name, spec in SERVICES.items():
        if "build" in spec:
            build = spec["build"]
            assert (DOCKER / build["context"]).resolve() == ROOT, name
            assert (ROOT / build["dockerfile"]).is_file(), name
            assert spec["image"] == ("priorstudy:gpu" if "gpu" in build["dockerfile"] else "priorstudy:cpu"), name


def test_every_long_running_service_has_a_healthcheck_and_dependencies_wait_for_it():
    for name, spec in SERVICES.items():
        if name in JOBS:
            continue
        test = spec["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
        if test[:3] == ["CMD", "python", "-c"]:
            compile(test[3], f"{name} healthcheck", "exec")
        for dependency, condition in spec.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"} and "healthcheck" in SERVICES[dependency]
    for dependency in SERVICES["study"]["depends_on"]:
        assert SERVICES[dependency]["healthcheck"]


def test_mlflow_server_runs_on_postgres_with_a_proxied_shared_artifact_store():
    cmd = command("mlflow")
    assert cmd[:2] == ["mlflow", "server"]
    params = click_params(mlflow.cli.server, "server", cmd[2:])
    env = SERVICES["postgres"]["environment"]
    assert params["backend_store_uri"] == (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}"
    )
    assert params["serve_artifacts"] and params["artifacts_destination"] == "/mlartifacts"
    assert "mlartifacts:/mlartifacts" in SERVICES["mlflow"]["volumes"]
    assert params["host"] == "0.0.0.0" and published("mlflow", params["port"])
    assert f"mlflow:{params['port']}" in params["allowed_hosts"].split(",")  # the Host header trials send
    assert f"localhost:{params['port']}/health" in SERVICES["mlflow"]["healthcheck"]["test"][3]
    assert "psycopg[binary]==3.3.9" in installed_requirements("Dockerfile.cpu")  # the [cluster] extra


def test_the_cluster_extra_has_the_driver_sqlalchemy_opens_postgresql_uris_with():
    """SQLAlchemy 2.1 opens postgresql:// with psycopg 3; psycopg2 (what 2.0 used) would leave the server failing
    with "No module named 'psycopg'"."""
    from sqlalchemy.engine import make_url

    driver = make_url("postgresql://u@h/db").get_dialect().driver
    assert driver == "psycopg"
    assert [r.split("[")[0] for r in PYPROJECT["project"]["optional-dependencies"]["cluster"]] == [driver]


def test_ray_head_and_workers_agree_on_addresses_ports_and_shared_storage():
    head_cmd = command("ray-head")
    head = click_params(ray_cli.start, "start", head_cmd[2:])
    assert head_cmd[:2] == ["ray", "start"] and head["head"] and head["block"]
    assert published("ray-head", head["dashboard_port"])
    assert f"localhost:{head['dashboard_port']}/api/gcs_healthz" in SERVICES["ray-head"]["healthcheck"]["test"][3]
    for name in ("ray-worker", "ray-worker-gpu"):
        worker = click_params(ray_cli.start, "start", command(name)[2:])
        assert worker["address"] == f"ray-head:{head['port']}" and worker["block"] and not worker["head"]
        agent = worker["dashboard_agent_listen_port"]
        assert f"localhost:{agent}/api/local_raylet_healthz" in SERVICES[name]["healthcheck"]["test"][3]
    assert SERVICES["ray-worker"]["deploy"]["replicas"] >= 1  # scale with --scale ray-worker=N
    assert SERVICES["ray-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    for name in ("ray-head", "ray-worker", "ray-worker-gpu", "study"):
        assert "ray_results:/data/ray_results" in SERVICES[name]["volumes"], name
        env = SERVICES[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token", name
        assert SERVICES[name]["secrets"] == ["ray_auth_token"], name


def test_nothing_is_published_beyond_this_host_and_the_ray_token_stays_out_of_git_and_images():
    """MLflow (no authentication) and the Ray job API are published on 127.0.0.1 unless PRIORSTUDY_BIND is set;
    the token file the Ray services read as a Docker secret is neither committed nor copied into an image."""
    ports = {name: spec["ports"] for name, spec in SERVICES.items() if "ports" in spec}
    assert ports == {"mlflow": [f"{BIND}:5000:5000"], "ray-head": [f"{BIND}:8265:8265"]}
    assert COMPOSE["secrets"] == {"ray_auth_token": {"file": "./ray_auth_token"}}
    assert "/docker/ray_auth_token" in (ROOT / ".gitignore").read_text().split()
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        assert "docker/ray_auth_token" in (DOCKER / f"{name}.dockerignore").read_text().split(), name


def test_the_study_is_a_ray_job_submitted_to_the_head():
    """`ray job submit` to the head's job API (the study container is no Ray node), the study without --address
    (the job's cluster), and tracking URI and storage in the entrypoint, so other study arguments keep them."""
    from ray.dashboard.modules.job.cli import submit

    cmd = command("study")
    assert cmd[:3] == ["ray", "job", "submit"]
    job = click_params(submit, "submit", cmd[3:])
    head = click_params(ray_cli.start, "start", command("ray-head")[2:])
    assert job["address"] == f"http://ray-head:{head['dashboard_port']}"
    study = list(job["entrypoint"])
    assert study[:3] == ["python", "-m", "study.run"] and (ROOT / "study" / "run.py").is_file()
    args = build_parser().parse_args(study[3:])
    get(args.space)
    mlflow_port = click_params(mlflow.cli.server, "server", command("mlflow")[2:])["port"]
    assert args.address is None
    assert args.tracking_uri == f"http://mlflow:{mlflow_port}" and args.storage == "/data/ray_results"
    assert "--tracking-uri" in SERVICES["study"]["entrypoint"] and "--storage" in SERVICES["study"]["entrypoint"]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_install_the_project_with_its_pins(name):
    rows = dockerfile(name)
    assert rows[0][0] == "FROM" and rows[0][1].startswith("python:3.11")  # pyproject: requires-python 3.11
    assert PYPROJECT["project"]["requires-python"].startswith(">=3.11")
    env = " ".join(args for op, args in rows if op == "ENV")
    assert "RAY_AUTH_MODE=token" in env and "MLFLOW_DISABLE_TELEMETRY=true" in env
    copies = [args.split() for op, args in rows if op == "COPY"]
    assert ["pyproject.toml", "/tmp/pyproject.toml"] in copies and [".", "/app"] in copies
    runs = " ".join(args for op, args in rows if op == "RUN")
    assert "pip install --no-deps ." in runs
    extra = PYPROJECT["project"]["optional-dependencies"]["cluster"] if name == "Dockerfile.cpu" else []
    assert installed_requirements(name) == PYPROJECT["project"]["dependencies"] + extra
    torch_pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch=="))
    if name == "Dockerfile.cpu":
        assert "download.pytorch.org/whl/cpu" in runs and torch_pin in runs
    else:
        assert "NVIDIA_VISIBLE_DEVICES=all" in env and "download.pytorch.org" not in runs
    cmd = next(args for op, args in rows if op == "CMD")
    assert yaml.safe_load(cmd)[:3] == ["python", "-m", "study.run"]
    ignored = (DOCKER / f"{name}.dockerignore").read_text().split()
    assert {".venv", ".git", "ray_results", "mlruns.db", "mlartifacts"} <= set(ignored)
