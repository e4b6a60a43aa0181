"""Checks a Terraform module without providers: it parses, and every name it uses is declared.

`terraform validate` needs the providers downloaded; this runs anywhere python-hcl2 is installed.
For each directory given (default deploy/terraform/azure) it parses every *.tf and
*.tfvars.example file, then reports:
  - a `var.X` with no `variable "X"`, a declared variable that nothing uses,
  - a `local.X` with no such local,
  - a `<type>.<name>` or `data.<type>.<name>` reference to a resource or data source not declared,
  - a key in terraform.tfvars.example that is not a variable.
Attribute names are not checked against the providers' schemas.

Usage: python scripts/terraform_check.py [module-dir ...]   (exit 1 on any error)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hcl2

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODULES = [ROOT / "deploy/terraform/azure"]

VAR_REF = re.compile(r"\bvar\.([A-Za-z_][\w-]*)")
LOCAL_REF = re.compile(r"\blocal\.([A-Za-z_][\w-]*)")
DATA_REF = re.compile(r"\bdata\.([a-z][a-z0-9]*_\w+)\.([A-Za-z_][\w-]*)")
RESOURCE_REF = re.compile(r"(?<![\w.\"])([a-z][a-z0-9]*_[a-z0-9_]+)\.([A-Za-z_][\w-]*)")
COMMENT = re.compile(r"(?m)^\s*(#|//).*$")


def unquote(name: str) -> str:
    return name.strip('"')


def block_names(blocks: list[dict], depth: int) -> set[tuple[str, ...]]:
    """Labels of `variable "x"` (depth 1) or `resource "type" "name"` (depth 2) blocks."""
    names = set()
    for block in blocks:
        for first, inner in block.items():
            if depth == 1:
                names.add((unquote(first),))
            else:
                names.update((unquote(first), unquote(second)) for second in inner)
    return names


def check_module(module: Path) -> list[str]:
    errors: list[str] = []
    declared_vars: set[str] = set()
    declared_locals: set[str] = set()
    resources: set[tuple[str, str]] = set()
    data_sources: set[tuple[str, str]] = set()
    texts: dict[Path, str] = {}
    tf_files = sorted(module.glob("*.tf"))
    if not tf_files:
        return [f"{module}: no .tf files"]
    for path in tf_files:
        try:
            with path.open() as handle:
                parsed = hcl2.load(handle)
        except Exception as error:  # python-hcl2 raises lark errors of several types
            errors.append(f"{path}: does not parse: {error}")
            continue
        texts[path] = COMMENT.sub("", path.read_text())
        declared_vars |= {name for (name,) in block_names(parsed.get("variable", []), 1)}
        for block in parsed.get("locals", []):
            declared_locals |= {unquote(key) for key in block if not key.startswith("__")}
        resources |= block_names(parsed.get("resource", []), 2)
        data_sources |= block_names(parsed.get("data", []), 2)

    used_vars: set[str] = set()
    for path, text in texts.items():
        for name in VAR_REF.findall(text):
            used_vars.add(name)
            if name not in declared_vars:
                errors.append(f"{path.name}: var.{name} is not declared")
        for name in LOCAL_REF.findall(text):
            if name not in declared_locals:
                errors.append(f"{path.name}: local.{name} is not declared")
        for kind, name in DATA_REF.findall(text):
            if (kind, name) not in data_sources:
                errors.append(f"{path.name}: data.{kind}.{name} is not declared")
        for kind, name in RESOURCE_REF.findall(DATA_REF.sub("", text)):
            if (kind, name) not in resources:
                errors.append(f"{path.name}: {kind}.{name} is not declared")
    errors += [
        f"variable {name!r} is declared but never used"
        for name in sorted(declared_vars - used_vars)
    ]

    for example in sorted(module.glob("*.tfvars.example")):
        try:
            with example.open() as handle:
                values = hcl2.load(handle)
        except Exception as error:
            errors.append(f"{example}: does not parse: {error}")
            continue
        errors += [
            f"{example.name}: {key} is not a variable"
            for key in values
            if not key.startswith("__") and key not in declared_vars
        ]
    return errors


def main(argv: list[str]) -> int:
    modules = [Path(arg) for arg in argv[1:]] or DEFAULT_MODULES
    failed = False
    for module in modules:
        errors = check_module(module)
        for error in errors:
            print(f"FAILED: {error}", file=sys.stderr)
        failed |= bool(errors)
        if not errors:
            count = len(list(module.glob("*.tf")))
            print(f"{module}: {count} files parse, every reference is declared")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
