"""Checks deploy/monitoring/prometheus/prometheus.yml with a promtool lacking Kubernetes SD.

Debian's promtool is built without the Kubernetes service discovery, so `promtool check config`
rejects any `kubernetes_sd_configs` block. This script checks those blocks' own fields here (role,
known keys, namespace list), replaces each with a `static_configs` block naming a placeholder
target, maps the paths that exist only in the pod (the rules mount, the service account's token
and CA files) to the repository's rules and to empty stand-in files, and runs
`promtool check config` on the result: everything else (relabelling, scrape options, Alertmanager
wiring, the rule files it loads) is checked by promtool itself. Discovery against a live API
server, and the token's content, are not exercised.

Usage: python scripts/promconfig_static.py [prometheus.yml]   (default: the one above; 1 on error)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy/monitoring/prometheus/prometheus.yml"
RULES_MOUNT = "/etc/prometheus/rules/"  # where prometheus-deployment.yaml mounts rules/
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount/"

SD_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}
SD_KEYS = {
    "role",
    "namespaces",
    "selectors",
    "api_server",
    "kubeconfig_file",
    "attach_metadata",
    "follow_redirects",
    "enable_http2",
    "tls_config",
    "authorization",
    "basic_auth",
    "oauth2",
    "bearer_token",
    "bearer_token_file",
    "proxy_url",
}


def sd_errors(job: str, sd: dict) -> list[str]:
    errors = [
        f"{job}: unknown kubernetes_sd_configs key {key!r}" for key in sd if key not in SD_KEYS
    ]
    if sd.get("role") not in SD_ROLES:
        errors.append(
            f"{job}: kubernetes_sd_configs role {sd.get('role')!r} not in {sorted(SD_ROLES)}"
        )
    names = (sd.get("namespaces") or {}).get("names", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        errors.append(f"{job}: kubernetes_sd_configs namespaces.names must be a list of names")
    return errors


def static_config(config: dict) -> tuple[dict, list[str]]:
    errors: list[str] = []
    for job in config.get("scrape_configs", []):
        sds = job.pop("kubernetes_sd_configs", None)
        if sds is None:
            continue
        for sd in sds:
            errors += sd_errors(job["job_name"], sd)
        job.setdefault("static_configs", []).append({"targets": ["kubernetes-sd.invalid:80"]})
    return config, errors


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else CONFIG
    with tempfile.TemporaryDirectory() as tmp:
        account = Path(tmp) / "serviceaccount"
        account.mkdir()
        for name in ("token", "ca.crt"):
            (account / name).touch()
        text = (
            source.read_text()
            .replace(RULES_MOUNT, f"{source.parent / 'rules'}/")
            .replace(SERVICE_ACCOUNT, f"{account}/")
        )
        config, errors = static_config(yaml.safe_load(text))
        for error in errors:
            print(f"FAILED: {error}", file=sys.stderr)
        rendered = Path(tmp) / "prometheus.yml"
        rendered.write_text(yaml.safe_dump(config, sort_keys=False))
        status = subprocess.run(["promtool", "check", "config", str(rendered)]).returncode
    return 1 if errors else status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
