"""A local study's Ray: token auth keeps a process without the token out, and the token a study writes is readable
by its owner only."""

from __future__ import annotations

import os
import subprocess
import sys

from study.run import connect_ray

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
        children = [subprocess.Popen([sys.executable, "-c", probe], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True) for env in (stranger, with_token)]
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
