"""Every package the platform imports at run time is a declared dependency, not a test extra:
`scripts/start.sh` installs only the dependencies, and a missing one fails there, not here."""

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGES = ("campaign_express", "campaigns", "bidding", "inference", "analytics",
                    "loyalty", "dsp")
FIRST_PARTY = set(RUNTIME_PACKAGES)
# Imported only by commands that say what to install for them (training: the `train` extra;
# S3 media: the `s3` extra).
OPTIONAL = {"onnx", "storages", "boto3", "botocore"}


def _name(requirement: str) -> str:
    for separator in "<>=!~[; ":
        requirement = requirement.split(separator)[0]
    return requirement.lower().replace("_", "-")


def _imports() -> set[str]:
    found = set()
    for package in RUNTIME_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or path.name.endswith("_pb2.py") or (
                    path.name.endswith("_pb2_grpc.py")):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found - FIRST_PARTY - set(sys.stdlib_module_names) - {"__future__"}


def test_runtime_imports_are_declared_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(requirement) for requirement in project["dependencies"]}
    distributions = packages_distributions()
    undeclared = {}
    for module in sorted(_imports() - OPTIONAL):
        names = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
        if not names & declared and not any(_declared_through(name, declared)
                                            for name in names):
            undeclared[module] = sorted(names)
    assert undeclared == {}


def _declared_through(name: str, declared: set[str]) -> bool:
    """Packages that come with a declared one (protobuf with grpcio-tools, ...)."""
    for parent in declared:
        try:
            needs = requires(parent) or []
        except Exception:  # noqa: BLE001 - a declared name that is not installed: not a parent
            continue
        if any(_name(requirement) == name and "extra ==" not in requirement
               for requirement in needs):
            return True
    return False
