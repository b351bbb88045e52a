"""A study in the MLflow UI, checked as a user sees it: `mlflow ui` on the study's store, headless Chromium (Debian's
`chromium`) on the runs-table URL the study prints, then a click on the parent run's expander. Passes when the
study's parent run and every nested trial run appear by name, and the parent run's page shows the study's
description (what it compares, its factors and metric).

    python benchmarks/mlflow_ui_check.py --tracking-uri sqlite:///mlruns.db --study NAME

The browser is driven over the Chrome DevTools Protocol with aiohttp (a Ray dependency), so no browser driver is
installed. Exit 0 when everything appears, 1 (with the page's text) when something does not.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.loading import STUDY_ROLE_TAG  # noqa: E402
from study.tracking import runs_table_path  # noqa: E402

EXPANDER = 'button[data-component-id*="runnamecellrenderer"]'  # the +/- before a parent run's name


class UiCheckFailed(AssertionError):
    """Something the study logged does not appear in the browser; the message holds the page's text."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_url(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def mlflow_ui(tracking_uri: str) -> Iterator[str]:
    """`mlflow ui` on the store, on a free port of 127.0.0.1; yields its base URL."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow), "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_url(f"http://127.0.0.1:{port}/health", 60, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise FileNotFoundError(
        "no headless browser: install Debian's chromium (apt-get install chromium; `make test` does it when it can)"
    )


@contextmanager
def headless_chromium() -> Iterator[str]:
    """Chromium with its DevTools endpoint on a free port; yields the endpoint's base URL."""
    port = free_port()
    profile = tempfile.mkdtemp(prefix="priorstudy-chromium-")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}",
        "--window-size=1600,1000",
    ]
    proc = subprocess.Popen(
        [chromium_binary(), *flags, "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_url(f"http://127.0.0.1:{port}/json/version", 60, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    """One browser tab over the DevTools Protocol: navigate, evaluate JavaScript, wait for text."""

    def __init__(self, socket_):
        self._socket = socket_
        self._ids = itertools.count(1)

    async def call(self, method: str, **params):
        call_id = next(self._ids)
        await self._socket.send_json({"id": call_id, "method": method, "params": params})
        async for message in self._socket:
            reply = json.loads(message.data)
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
        raise RuntimeError(f"the browser closed its DevTools connection during {method}")

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def text(self) -> str:
        return await self.evaluate("document.body ? document.body.innerText : ''") or ""

    async def wait_for(self, texts: list[str], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while True:
            page = await self.text()
            missing = [t for t in texts if t not in page]
            if not missing:
                return page
            if time.monotonic() > deadline:
                raise UiCheckFailed(
                    f"{what}: {missing} not on the page after {timeout:.0f} s; it shows:\n{page[:3000]}"
                )
            await asyncio.sleep(0.5)


async def _check(
    devtools: str, runs_url: str, run_url: str, parent: str, trials: list[str], description: str, timeout: float
) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{devtools}/json/list") as response:
            target = next(t for t in await response.json() if t["type"] == "page")
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.call("Page.navigate", url=runs_url)
            await page.wait_for([parent], timeout, "the runs table")
            # the row can render before its expander: the nested runs arrive in a later request
            deadline = time.monotonic() + timeout
            while not await page.evaluate(
                f"""(() => {{ const row = [...document.querySelectorAll('[role="row"]')]
                        .find(r => r.innerText.includes({json.dumps(parent)}));
                        const button = row && row.querySelector('{EXPANDER}');
                        if (button) button.click();
                        return Boolean(button); }})()"""
            ):
                if time.monotonic() > deadline:
                    raise UiCheckFailed(
                        f"the parent run {parent!r} has no expander after {timeout:.0f} s: no nested runs under it"
                    )
                await asyncio.sleep(0.5)
            await page.wait_for(trials, timeout, "the parent run's nested trials")
            await page.call("Page.navigate", url=run_url)
            await page.wait_for([parent, description], timeout, "the parent run's page")


def check_study_in_ui(tracking_uri: str, study: str, timeout: float = 60) -> dict[str, object]:
    """Open the study in the MLflow UI in headless Chromium; raise UiCheckFailed unless its parent run, its nested
    trial runs and its description appear. Returns what was looked for."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise UiCheckFailed(f"no MLflow experiment named {study!r} in {tracking_uri}")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parent = next((r for r in runs if r.data.tags.get(STUDY_ROLE_TAG) == "study"), None)
    if parent is None:
        raise UiCheckFailed(f"study {study!r} has no parent run")
    trials = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    if not trials:
        raise UiCheckFailed(f"no trial run of study {study!r} is nested under its parent run")
    # its first sentence as the page renders the Markdown: "Study NAME: space learnable_prior on ..."
    description = re.sub(r"[*`]", "", parent.data.tags["mlflow.note.content"]).split(". ")[0]
    with mlflow_ui(tracking_uri) as ui, headless_chromium() as devtools:
        runs_url = ui + runs_table_path(experiment.experiment_id)
        run_url = f"{ui}/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}"
        asyncio.run(_check(devtools, runs_url, run_url, parent.info.run_name, trials, description, timeout))
    return {"parent": parent.info.run_name, "trials": trials, "description": description, "runs_url": runs_url}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--study", required=True, help="the study's name (its MLflow experiment)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for each view")
    args = parser.parse_args(argv)
    try:
        seen = check_study_in_ui(args.tracking_uri, args.study, args.timeout)
    except UiCheckFailed as failure:
        print(f"FAILED: {failure}")
        return 1
    print(
        f"in the MLflow UI ({seen['runs_url']}): parent run {seen['parent']!r}, nested trials "
        f"{', '.join(seen['trials'])}; its page shows {seen['description']!r}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
