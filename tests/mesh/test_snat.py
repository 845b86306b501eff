"""The homelab nodes' source NAT into the mesh (components/mesh/snat.py), as data
and as the script an init container runs. tests/mesh/test_packet_path.py applies
it for real in a network namespace."""

from __future__ import annotations

import ipaddress
import subprocess

from components.mesh import snat
from tests.conftest import require_tool

MESH = ipaddress.IPv4Network("10.42.0.0/16")


def test_one_masquerade_rule_for_everything_leaving_by_the_tun_but_the_overlay_itself():
    assert snat.snat_rules(MESH) == [
        ["-t", "nat", "-A", "POSTROUTING", "-o", "nebula1", "!", "-s", "10.42.0.0/16", "-j", "MASQUERADE"],
    ]


def test_the_rule_names_the_given_device_and_mesh():
    (rule,) = snat.snat_rules(ipaddress.IPv4Network("10.99.0.0/20"), "nebula7")
    assert rule[rule.index("-o") + 1] == "nebula7"
    assert rule[rule.index("-s") - 1:rule.index("-s") + 2] == ["!", "-s", "10.99.0.0/20"]


def test_no_rule_names_a_node():
    """MASQUERADE takes the tun's own address: one rule serves every node."""
    for rule in snat.snat_rules(MESH):
        assert "--to-source" not in rule and "SNAT" not in rule


def test_check_form_is_the_same_rule():
    (rule,) = snat.snat_rules(MESH)
    check = snat.as_check(rule)
    assert check[check.index("-C") + 1:] == rule[rule.index("-A") + 1:]
    assert "-A" not in check


def test_script_checks_before_it_appends():
    script = snat.snat_script(MESH)
    assert script.startswith("#!/bin/sh\n") and "set -eu" in script
    check = script.index("-t nat -C POSTROUTING -o nebula1 '!' -s 10.42.0.0/16 -j MASQUERADE")
    append = script.index("-t nat -A POSTROUTING -o nebula1 '!' -s 10.42.0.0/16 -j MASQUERADE")
    assert check < append and "||" in script[check:append]
    assert script.count("MASQUERADE") == 2


def test_script_passes_shellcheck(tmp_path):
    path = tmp_path / "snat.sh"
    path.write_text(snat.snat_script(MESH))
    result = subprocess.run([require_tool("shellcheck"), "-s", "sh", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_script_runs_iptables_as_given_twice_with_the_same_rule(tmp_path):
    """With a fake iptables that finds no rule, the script checks, then appends."""
    log = tmp_path / "calls"
    fake = tmp_path / "iptables"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\ncase "$*" in *" -C "*) exit 1;; esac\n')
    fake.chmod(0o755)
    script = tmp_path / "snat.sh"
    script.write_text(snat.snat_script(MESH))
    subprocess.run(["sh", str(script)], env={"IPTABLES": str(fake), "PATH": "/usr/bin:/bin"}, check=True)
    assert log.read_text().splitlines() == [
        "-w -t nat -C POSTROUTING -o nebula1 ! -s 10.42.0.0/16 -j MASQUERADE",
        "-w -t nat -A POSTROUTING -o nebula1 ! -s 10.42.0.0/16 -j MASQUERADE",
    ]
