"""The Azure Terraform module parses and declares every name it uses (scripts/terraform_check.py).

The check needs python-hcl2 only, not the providers, so it runs where `terraform validate` cannot.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "deploy" / "terraform" / "azure"

if importlib.util.find_spec("hcl2") is None:
    message = "python-hcl2 is not installed (pip install python-hcl2)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

spec = importlib.util.spec_from_file_location(
    "terraform_check", ROOT / "scripts" / "terraform_check.py"
)
assert spec is not None and spec.loader is not None
terraform_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(terraform_check)


def test_the_azure_module_parses_and_declares_every_name_it_uses():
    assert terraform_check.check_module(MODULE) == []


def test_the_check_reports_undeclared_names_unused_variables_and_unknown_tfvars(tmp_path):
    module = tmp_path / "azure"
    shutil.copytree(MODULE, module)
    main = module / "main.tf"
    main.write_text(
        main.read_text()
        .replace("var.system_vm_size", "var.system_vmsize")
        .replace("azurerm_subnet.redis.id", "azurerm_subnet.cache.id")
    )
    example = module / "terraform.tfvars.example"
    example.write_text(example.read_text() + 'region = "westeurope"\n')

    assert terraform_check.check_module(module) == [
        "main.tf: var.system_vmsize is not declared",
        "main.tf: azurerm_subnet.cache is not declared",
        "variable 'system_vm_size' is declared but never used",
        "terraform.tfvars.example: region is not a variable",
    ]


def test_a_file_that_does_not_parse_is_reported(tmp_path):
    module = tmp_path / "azure"
    shutil.copytree(MODULE, module)
    (module / "broken.tf").write_text('resource "azurerm_resource_group" "extra" {\n')

    errors = terraform_check.check_module(module)

    assert len(errors) == 1
    assert errors[0].startswith(f"{module / 'broken.tf'}: does not parse:")
