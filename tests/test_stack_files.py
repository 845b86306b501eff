"""The project and stack files as the Pulumi CLI reads them: required keys,
secret defaults, and files that are not YAML or not a mapping, each one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tools import harness


def _project(tmp_path: Path, config_block: str, stack_text: str | None = None) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(f"name: hybrid-llm\nruntime: python\nconfig:\n{config_block}")
    if stack_text is not None:
        (tmp_path / "Pulumi.dev.yaml").write_text(stack_text)
    return tmp_path


@pytest.mark.parametrize("stack_file", sorted(p.name for p in ROOT.glob("Pulumi.*.yaml")))
def test_every_stack_file_satisfies_the_clis_required_keys(stack_file):
    """The rule that stopped every `pulumi up` of dev: a declared key without a
    default must be set by the stack. The real files must pass it."""
    stack = stack_file[len("Pulumi."):-len(".yaml")]
    _, required = harness.project_schema()
    assert required == set()
    assert harness.stack_config(stack)["aws:region"]


def test_a_declared_key_without_default_is_required(tmp_path):
    root = _project(tmp_path, "  homelabKubeconfig:\n    type: string\n", "config:\n  aws:region: us-east-1\n")
    with pytest.raises(harness.StackConfigFileError) as info:
        harness.stack_config("dev", root=root)
    assert str(info.value) == ("Stack 'dev' is missing configuration value 'hybrid-llm:homelabKubeconfig' "
                               "(Pulumi.yaml declares it without a default)")
    assert harness.stack_config("dev", {"hybrid-llm:homelabKubeconfig": "x"}, root=root)


def test_a_secret_key_with_a_plain_default_is_refused(tmp_path):
    root = _project(tmp_path, "  token:\n    type: string\n    secret: true\n    default: ''\n")
    with pytest.raises(harness.StackConfigFileError, match=r"hybrid-llm:token is secret"):
        harness.stack_config("dev", root=root)


@pytest.mark.parametrize("text,expected", [
    ("config:\n  aws:region: [us-east-1\n", "Pulumi.dev.yaml: not valid YAML at line"),
    ("config:\n\t- x\n", "Pulumi.dev.yaml: not valid YAML"),
    ("- just\n- a list\n", "Pulumi.dev.yaml: expected a mapping at the top"),
    ("config: [aws:region, us-east-1]\n", "Pulumi.dev.yaml: `config:` must be a mapping"),
    ("config: us-east-1\n", "Pulumi.dev.yaml: `config:` must be a mapping"),
])
def test_broken_stack_files_are_one_line(tmp_path, text, expected):
    root = _project(tmp_path, "  vpcCidr:\n    type: string\n    default: 10.0.0.0/16\n", text)
    with pytest.raises(harness.StackConfigFileError) as info:
        harness.stack_config("dev", root=root)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_a_stack_file_that_is_not_utf8(tmp_path):
    root = _project(tmp_path, "  vpcCidr:\n    type: string\n    default: 10.0.0.0/16\n")
    (root / "Pulumi.dev.yaml").write_bytes(b"config:\n  aws:region: \xff\xfe\n")
    with pytest.raises(harness.StackConfigFileError, match=r"^Pulumi.dev.yaml: cannot read it"):
        harness.stack_config("dev", root=root)
