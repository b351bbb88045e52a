"""A study's driver and the processes working for it: their record in the study folder (driver.state), and the
two guards that keep every trial to one writer.

A local study's Ray dies with its driver, but not at once: after a `kill -9` of the driver, trial workers trained
on for minutes and one wrote FINISHED to MLflow with no driver left. So
- a trial stops, writing nothing more, once the driver on its machine is gone (`exit_if_orphaned`, before each of
  its writes), and
- --resume waits a little for the old driver and its workers on this machine to end, and refuses while they live
  (`wait_for_end`, `describe_live`): two writers on one MLflow run would interleave their histories.
A process is known by its PID and its start time (so that a reused PID is not taken for it), on a machine = boot id
and PID namespace, all read from /proc; where there is no /proc, nothing is checked.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune

from study.storage import StudyFolder

# JSON, but not named *.json: on resume Tune copies the folder's .json and .pkl files to its staging folder and, during
# the run, back, which would bring the last run's record back over this run's.
DRIVER_FILE = "driver.state"
END_WAIT_S = 15.0  # a local Ray's workers end within seconds of their driver


@functools.cache
def machine() -> str | None:
    """This process's machine as /proc sees it: boot id and PID namespace (a container has its own)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, field 22 of /proc/PID/stat); None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # after the command name, which may hold spaces


def identity(pid: int) -> dict[str, Any] | None:
    """The record of a live process on this machine, or None."""
    start = process_start(pid)
    return None if start is None or machine() is None else {"pid": pid, "start": start, "machine": machine()}


def here(process: Mapping[str, Any]) -> bool:
    return process.get("machine") is not None and process["machine"] == machine()


def is_alive(process: Mapping[str, Any]) -> bool:
    return here(process) and process_start(process["pid"]) == process["start"]


@functools.cache  # one record a process: the trials' and driver.state's
def this_driver() -> dict[str, Any]:
    """This process as a study's driver: its identity (start and machine None without /proc), host and start time
    for the messages."""
    return {
        **(identity(os.getpid()) or {"pid": os.getpid(), "start": None, "machine": None}),
        "host": platform.node(),
        "started_at": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def write(folder: StudyFolder, driver: Mapping[str, Any], workers: list[Mapping[str, Any]]) -> None:
    folder.write_text(DRIVER_FILE, json.dumps({"driver": dict(driver), "workers": list(workers)}, indent=2))


def wait_for_end(folder: StudyFolder) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The study's last driver and those of its processes on this machine still alive after waiting up to
    END_WAIT_S for them to end (none: an empty list)."""
    if not folder.has(DRIVER_FILE):
        return {}, []
    saved = json.loads(folder.read_text(DRIVER_FILE))
    # this very process may have run the study before (in-process main): it is not a second writer
    processes = [p for p in (saved["driver"], *saved["workers"]) if p["pid"] != os.getpid() or not here(p)]
    deadline = time.monotonic() + END_WAIT_S
    live = [p for p in processes if is_alive(p)]
    if live:
        print(
            f"note: waiting up to {END_WAIT_S:g} s for PIDs {', '.join(str(p['pid']) for p in live)} of the study's "
            "last run to end",
            flush=True,
        )
    while live and time.monotonic() < deadline:
        time.sleep(0.5)
        live = [p for p in live if is_alive(p)]
    return saved["driver"], live


def describe_live(name: str, driver: Mapping[str, Any], live: list[Mapping[str, Any]]) -> str:
    pids = [p["pid"] for p in live]
    roles = [("driver " if p["pid"] == driver["pid"] else "trial worker ") + str(p["pid"]) for p in live]
    return (
        f"study {name!r} still has live processes from its run by PID {driver['pid']} (started "
        f"{driver['started_at']} on {driver['host']}): {', '.join(roles)}; wait for them to end or end them: "
        f"kill -9 {' '.join(map(str, pids))}"
    )


def exit_if_orphaned(driver: Mapping[str, Any] | None) -> None:
    """In a trial: end this worker process at once if the study's driver ran on this machine and is gone."""
    if driver and here(driver) and not is_alive(driver):
        print(
            f"priorstudy: the study's driver (PID {driver['pid']}) is gone; this trial stops without writing "
            "(--resume continues it from its last checkpoint)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)


class WorkerRecord(tune.Callback):
    """On the driver: driver.state names this process when a fit starts (setup; a resumed study runs the callbacks
    of its first run, unpickled) and adds each trial worker on this machine at its first result (Tune puts the
    worker's pid and hostname in every result)."""

    def __init__(self, folder: StudyFolder):
        self.folder = folder

    def setup(self, **info) -> None:
        self.driver, self.workers = this_driver(), {}
        write(self.folder, self.driver, [])

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        pid = result.get("pid")
        if pid in self.workers or result.get("hostname") != self.driver["host"]:
            return
        worker = identity(pid)
        if worker is not None:
            self.workers[pid] = worker
            write(self.folder, self.driver, list(self.workers.values()))
