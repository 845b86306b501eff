"""The project and stack files as the Pulumi CLI reads them: required keys,
secret defaults, and files that are not YAML or not a mapping, each one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import ConfigError
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


# --- stack files read as the Pulumi CLI reads them (Go yaml.v3, YAML 1.2 booleans) ---

PORT_BLOCK = "  nebulaPort:\n    type: integer\n    default: 4242\n"


def test_a_plain_text_secret_in_a_stack_file_is_refused(tmp_path):
    """Offline every key the program wants secret counts as a secret (it stands for
    `--set` of `pulumi config set --secret`); one written in plain text in a stack
    file is not one, as the CLI path refuses it."""
    root = _project(tmp_path, PORT_BLOCK,
                    "config:\n  aws:region: us-east-1\n  hybrid-llm:homelabKubeconfig: 'apiVersion: v1'\n")
    with pytest.raises(harness.StackConfigFileError) as info:
        harness.stack_config("dev", root=root)
    message = str(info.value)
    assert message.startswith("Pulumi.dev.yaml: hybrid-llm:homelabKubeconfig:") and "--secret" in message
    assert "\n" not in message


@pytest.mark.parametrize("stack_text,default", [
    ("config:\n  aws:region: us-east-1\n  hybrid-llm:nebulaPort: 4343\n", "4242"),
    ("config:\n  aws:region: us-east-1\n", "4343"),
])
def test_a_nebula_port_the_policy_pack_refuses(tmp_path, stack_text, default):
    """The pack (policy/config.json) lets only UDP on its nebulaPort in from anywhere."""
    root = _project(tmp_path, PORT_BLOCK.replace("4242", default), stack_text)
    (root / "policy").mkdir()
    (root / "policy" / "config.json").write_text('{"no-open-ingress": {"nebulaPort": 4242}}\n')
    with pytest.raises(harness.StackConfigFileError) as info:
        harness.stack_config("dev", root=root)
    message = str(info.value)
    assert "hybrid-llm:nebulaPort: 4343" in message and "only UDP 4242" in message and "\n" not in message


def test_a_set_nebula_port_is_a_what_if_the_pack_does_not_judge(tmp_path):
    """`tools/plan.py --set hybrid-llm:nebulaPort=...` plans another port without the
    pack's config changing with it; the stack files themselves are still checked."""
    root = _project(tmp_path, PORT_BLOCK, "config:\n  aws:region: us-east-1\n  hybrid-llm:nebulaPort: 4343\n")
    (root / "policy").mkdir()
    (root / "policy" / "config.json").write_text('{"no-open-ingress": {"nebulaPort": 4242}}\n')
    with pytest.raises(harness.StackConfigFileError):
        harness.stack_config("dev", root=root)                 # the file's own port is judged
    for port in ("4242", "5353"):                               # a --set replaces it and is not
        assert harness.stack_config("dev", {"hybrid-llm:nebulaPort": port}, root=root)["hybrid-llm:nebulaPort"] == port


@pytest.mark.parametrize("pack_config", ['{"no-open-ingress": {"nebulaPort": 4343}}', '{"no-open-ingress": "disabled"}',
                                         '{"all": "advisory", "no-open-ingress": {"nebulaPort": 4242}}'])
def test_a_nebula_port_the_policy_pack_lets_in(tmp_path, pack_config):
    root = _project(tmp_path, PORT_BLOCK, "config:\n  aws:region: us-east-1\n  hybrid-llm:nebulaPort: 4343\n")
    (root / "policy").mkdir()
    (root / "policy" / "config.json").write_text(pack_config)
    assert harness.stack_config("dev", root=root)["hybrid-llm:nebulaPort"] == "4343"


@pytest.mark.parametrize("text,key", [
    ("config:\n  aws:region: us-east-1\n  hybrid-llm:gpuWorkers: 1\n  hybrid-llm:gpuWorkers: 2\n",
     "hybrid-llm:gpuWorkers"),
    ("config:\n  aws:region: us-east-1\n  gpuWorkers: 1\n  hybrid-llm:gpuWorkers: 2\n", "hybrid-llm:gpuWorkers"),
    ("config:\n  aws:region: us-east-1\nconfig:\n  aws:region: eu-west-1\n", "config"),
])
def test_a_duplicated_key_is_refused(tmp_path, text, key):
    """The CLI's YAML parser refuses a key given twice; PyYAML keeps the last."""
    root = _project(tmp_path, PORT_BLOCK, text)
    with pytest.raises(harness.StackConfigFileError) as info:
        harness.stack_config("dev", root=root)
    message = str(info.value)
    assert message.startswith("Pulumi.dev.yaml:") and key in message and "twice" in message, message


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n", "Yes", "OFF"])
def test_yaml_11_booleans_are_strings_as_the_cli_reads_them(tmp_path, run_program, word):
    root = _project(tmp_path, PORT_BLOCK, f"config:\n  aws:region: us-east-1\n  hybrid-llm:gpuSpot: {word}\n")
    assert harness.stack_config("dev", root=root)["hybrid-llm:gpuSpot"] == word
    with pytest.raises(ConfigError, match=r"^hybrid-llm:gpuSpot: expected true or false"):
        run_program({"hybrid-llm:gpuSpot": word})


@pytest.mark.parametrize("value,read", [("true", "true"), ("False", "false"), ("4242", "4242"), ("0.25", "0.25"),
                                         ("'1_0'", "1_0"), ("1:30", "1:30"),
                                         ("4242.0", "4242")])
def test_stack_file_scalars_reach_the_program_as_the_cli_hands_them(tmp_path, value, read):
    root = _project(tmp_path, PORT_BLOCK, f"config:\n  aws:region: us-east-1\n  hybrid-llm:x: {value}\n")
    assert harness.stack_config("dev", root=root)["hybrid-llm:x"] == read


@pytest.mark.parametrize("value", ["1_0", "010", "0x10", "0o10", "0b10", "1e3", "+5", ".nan", ".inf", "-.inf",
                                   "2024-01-01"])
def test_a_number_yaml_would_reinterpret_is_refused(tmp_path, value):
    """The CLI's YAML reads `1_0` as 10, `010` as 8 and `2024-01-01` as a date: refused, naming the key."""
    root = _project(tmp_path, PORT_BLOCK, f"config:\n  aws:region: us-east-1\n  hybrid-llm:gpuWorkers: {value}\n")
    with pytest.raises(harness.StackConfigFileError) as info:
        harness.stack_config("dev", root=root)
    message = str(info.value)
    assert message.startswith("Pulumi.dev.yaml: hybrid-llm:gpuWorkers:") and "\n" not in message, message


@pytest.mark.parametrize("key", ["confg", "Config", "secretprovider", "stack"])
def test_an_unknown_top_level_key_is_refused(tmp_path, key):
    """A misspelt `config:` once surfaced as a missing aws:region."""
    root = _project(tmp_path, PORT_BLOCK, f"{key}:\n  aws:region: us-east-1\n")
    with pytest.raises(harness.StackConfigFileError) as info:
        harness.stack_config("dev", root=root)
    message = str(info.value)
    assert message.startswith(f"Pulumi.dev.yaml: {key}: unknown top-level key") and "\n" not in message, message


def test_the_known_top_level_keys_are_accepted(tmp_path):
    root = _project(tmp_path, PORT_BLOCK, "secretsprovider: passphrase\nencryptionsalt: v1:abc\n"
                                          "config:\n  aws:region: us-east-1\n")
    assert harness.stack_config("dev", root=root)["aws:region"] == "us-east-1"
