#!/usr/bin/env bash
# Install what the tests need, make sure PostgreSQL, Redis, NATS and ClickHouse run on
# 127.0.0.1 (installing any that is absent from Debian's packages), and run the whole suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "Campaign Express needs Python 3.11 or newer" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'

eval "$(bash scripts/services.sh)"
# pytest-django creates (and drops) test_campaign_express beside this database.
export DATABASE_URL="${TEST_POSTGRES_URL%/*}/campaign_express"
if [ -z "${OPENRTB_CORPUS:-}" ] && [ -d ../shared/openrtb ]; then
  export OPENRTB_CORPUS=../shared/openrtb
fi
exec .venv/bin/pytest "$@"
