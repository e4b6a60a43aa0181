#!/usr/bin/env bash
# Install Campaign Express into .venv and start the whole platform on embedded defaults
# (SQLite, in-process store, bus and tasks, chDB) with demo data. Extra arguments go to
# `manage.py run` (for example --port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "Campaign Express needs Python 3.11 or newer" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e .
exec .venv/bin/python manage.py run --demo "$@"
