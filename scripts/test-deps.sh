#!/usr/bin/env bash
# What the tests need beyond .venv: Debian's chromium, for the MLflow UI check (tests/test_mlflow_ui.py). Installed
# with apt-get when missing and this is a root shell on Debian; elsewhere a note says how, and that test is skipped.
set -uo pipefail
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium for the MLflow UI test (apt-get) ..."
    if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
        >/tmp/priorstudy-apt.log 2>&1; then
        exit 0
    fi
    echo "warning: apt-get install chromium failed (see /tmp/priorstudy-apt.log); the MLflow UI test is skipped"
else
    echo "note: no chromium; install it (Debian: apt-get install chromium) to run the MLflow UI test"
fi
exit 0
