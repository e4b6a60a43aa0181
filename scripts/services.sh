#!/usr/bin/env bash
# Make sure PostgreSQL, Redis, NATS (JetStream) and ClickHouse answer on 127.0.0.1 for the
# integration tests: start each one that is down, installing its Debian package first when it
# is absent. Runs as root on Debian 12; idempotent, and quick when everything already runs.
#
# Prints the TEST_*_URL variables as export lines on stdout (progress goes to stderr):
#     eval "$(scripts/services.sh)"
set -euo pipefail

WAIT_SECONDS="${SERVICES_WAIT_SECONDS:-60}"
APT_UPDATED=0

say() { echo "services.sh: $*" >&2; }

install_packages() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        apt-get update -qq >&2
        APT_UPDATED=1
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# wait_until NAME LOG COMMAND...: poll COMMAND until it succeeds or WAIT_SECONDS pass.
wait_until() {
    local name="$1" log="$2"
    shift 2
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "$name did not come up within ${WAIT_SECONDS}s; see $log"
            exit 1
        fi
        sleep 0.5
    done
    say "$name is up"
}

postgres_answers() { pg_isready -q -h 127.0.0.1 -p 5432; }

redis_answers() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

# NATS greets every client with an INFO line, which says whether JetStream is enabled.
nats_answers() {
    timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && head -n1 <&3' \
        | grep -q '"jetstream":true'
}

clickhouse_answers() {
    clickhouse-client --host 127.0.0.1 --port 9000 --query "SELECT 1" >/dev/null 2>&1
}

ensure_postgres() {
    postgres_answers && return 0
    if ! command -v pg_ctlcluster >/dev/null; then
        install_packages postgresql
        # Only a cluster this script created is opened to password-less local connections.
        local hba
        hba="$(ls -d /etc/postgresql/*/main | sort -V | tail -n1)/pg_hba.conf"
        printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' \
            >"$hba"
    fi
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
    wait_until PostgreSQL "/var/log/postgresql/postgresql-$version-main.log" postgres_answers
}

ensure_redis() {
    redis_answers && return 0
    command -v redis-server >/dev/null || install_packages redis-server
    mkdir -p /var/lib/redis /var/log/redis
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2
    wait_until Redis /var/log/redis/ci.log redis_answers
}

ensure_nats() {
    nats_answers && return 0
    [ -x /usr/sbin/nats-server ] || install_packages nats-server
    mkdir -p /var/lib/nats-server
    say "starting NATS"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log >&2
    wait_until NATS /var/log/nats-server.log nats_answers
}

ensure_clickhouse() {
    clickhouse_answers && return 0
    if [ ! -x /usr/sbin/clickhouse-server ] || ! command -v clickhouse-client >/dev/null; then
        install_packages clickhouse-server clickhouse-client
    fi
    mkdir -p /var/lib/clickhouse /var/log/clickhouse-server
    chown -R clickhouse:clickhouse /var/lib/clickhouse /var/log/clickhouse-server
    say "starting ClickHouse"
    start-stop-daemon --start --oknodo --background --chuid clickhouse:clickhouse \
        --make-pidfile --pidfile /run/clickhouse-server-ci.pid \
        --exec /usr/sbin/clickhouse-server -- \
        --config-file=/etc/clickhouse-server/config.xml >&2
    wait_until ClickHouse /var/log/clickhouse-server/clickhouse-server.err.log clickhouse_answers
}

# The headless browser tests (tests/analytics/test_browser.py) drive Debian's chromium.
ensure_browser() {
    command -v chromium >/dev/null && command -v chromedriver >/dev/null && return 0
    install_packages chromium chromium-driver
}

ensure_postgres
ensure_redis
ensure_nats
ensure_clickhouse
ensure_browser
# promtool checks and unit-tests the alert rules (tests/deploy/test_monitoring.py).
command -v promtool >/dev/null || install_packages prometheus

echo "export TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres"
echo "export TEST_REDIS_URL=redis://127.0.0.1:6379/15"
echo "export TEST_NATS_URL=nats://127.0.0.1:4222"
echo "export TEST_CLICKHOUSE_URL=clickhouse://default@127.0.0.1:9000/campaign_express_test"
