#!/usr/bin/env bash
# Creates .venv/ with pip and installs the project with its pinned versions; a no-op when nothing changed.
# pip (not uv/poetry): pip takes torch 2.14.1 from this machine's local wheels instead of downloading it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
rm -f .venv/.installed-*
touch "$stamp"
