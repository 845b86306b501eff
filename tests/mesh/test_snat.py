"""The homelab nodes' source NAT into the mesh (components/mesh/snat.py), as data
and as the script an init container runs. tests/mesh/test_packet_path.py applies
it for real in a network namespace; the tests at the end run it the way the
init container does (read-only root, an empty read-only /run, NET_ADMIN as the
only capability, a network namespace of its own), and show that a first-use
backend switch of the kind Kubernetes' iptables images ship fails there."""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from pathlib import Path

import pytest

from components.mesh import snat
from tests.conftest import require_root, require_tool

MESH = ipaddress.IPv4Network("10.42.0.0/16")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


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


def test_script_names_the_nft_backend_and_nothing_else():
    """No bare `iptables`: in Kubernetes' images that is a wrapper that rewrites the
    root filesystem on first use to pick a backend."""
    script = snat.snat_script(MESH)
    assert snat.IPTABLES == "/usr/sbin/iptables-nft"
    assert 'IPTABLES="${IPTABLES:-/usr/sbin/iptables-nft}"' in script
    commands = [line.split()[0] for line in script.splitlines()
                if line.strip() and not line.startswith(("#", "set ", "IPTABLES="))]
    assert set(commands) == {'"$IPTABLES"', '||'}


# --- the script as the init container runs it ------------------------------------------

# In a private mount namespace: the root read-only (readOnlyRootFilesystem), an empty
# read-only /run (the image has no xtables lock and none is mounted), the directories
# given as $1.. writable (tmpfs), then only CAP_NET_ADMIN (capabilities: drop ALL, add
# NET_ADMIN) for the command. A root that is still writable is an error, not a pass.
_CONTAINER = """
set -e
while [ "$1" != -- ]; do mount -t tmpfs -o size=64k hybrid-llm-rw "$1"; shift; done; shift
if [ "$READ_ONLY" = 1 ]; then
  mount -o remount,bind,ro /
  mount -t tmpfs -o ro,size=4k,mode=755 hybrid-llm-run /run
  if touch /etc/.hybrid-llm-probe 2>/dev/null; then echo "the root is writable" >&2; exit 97; fi
fi
exec setpriv --inh-caps=-all --bounding-set=-all,+net_admin -- "$@"
"""


@pytest.fixture
def netns():
    """Fresh network namespaces (only loopback), deleted afterwards."""
    for tool in ("ip", "unshare", "mount", "setpriv"):
        require_tool(tool)
    require_tool(snat.IPTABLES)
    require_root("network namespaces, mount namespaces and nftables rules")
    made = []

    def make() -> str:
        name = f"hl-snat-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _as_container(namespace: str, *cmd: str, read_only: bool = True, writable: tuple[str, ...] = (),
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, "unshare", "--mount", "--propagation", "private",
         "sh", "-c", _CONTAINER, "sh", *writable, "--", *cmd],
        env={"PATH": PATH, "READ_ONLY": "1" if read_only else "0", **(env or {})},
        capture_output=True, text=True, timeout=30)


def _masquerade_rules(namespace: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "exec", namespace, snat.IPTABLES, "-t", "nat", "-S", "POSTROUTING"],
                            capture_output=True, text=True, check=True).stdout
    return [line for line in listed.splitlines() if "MASQUERADE" in line]


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "snat.sh"
    path.write_text(snat.snat_script(MESH))
    path.chmod(0o644)
    return path


def test_the_script_installs_the_rule_once_on_a_read_only_root_with_net_admin_only(netns, tmp_path):
    """As the init container: `/bin/sh /snat/snat.sh`, no IPTABLES in the
    environment, so the script's own default (iptables-nft) runs. It needs nothing
    writable and takes no /run/xtables.lock; the second run adds nothing."""
    namespace, script = netns(), _script(tmp_path)
    for _ in range(2):
        run = _as_container(namespace, "/bin/sh", str(script))
        assert run.returncode == 0, run.stderr
    assert _masquerade_rules(namespace) == [f"-A POSTROUTING ! -s {MESH} -o nebula1 -j MASQUERADE"]


def test_a_first_use_backend_switch_fails_there_so_this_test_catches_the_wrapper(netns, tmp_path):
    """A stand-in for the `iptables` of Kubernetes' debian-iptables image
    (kubernetes/release images/build/debian-iptables/bullseye/iptables-wrapper):
    an alternatives link to a wrapper that, under `set -e`, runs
    `update-alternatives --set` and re-executes itself. Its alternatives live in
    tmp_path, so the host's are never touched. On the read-only root the switch
    fails and no rule is installed; on a writable root the same wrapper works."""
    require_tool("update-alternatives")
    alt, admin, log, links = (tmp_path / d for d in ("alternatives", "admin", "log", "bin"))
    for directory in (alt, admin, log, links):
        directory.mkdir()
    manage = ["update-alternatives", "--altdir", str(alt), "--admindir", str(admin),
              "--log", str(log / "alternatives.log")]
    wrapper = tmp_path / "iptables-wrapper"
    wrapper.write_text("#!/bin/sh\nset -e\n"
                       f"{' '.join(manage)} --set iptables {snat.IPTABLES} >/dev/null\n"
                       'exec "$0" "$@"\n')
    wrapper.chmod(0o755)
    link = links / "iptables"
    for target, priority in ((wrapper, "100"), (snat.IPTABLES, "10")):
        subprocess.run([*manage, "--install", str(link), "iptables", str(target), priority],
                       check=True, capture_output=True, env={"PATH": PATH})
    assert link.resolve() == wrapper, "the wrapper is what `iptables` runs first"
    script = _script(tmp_path)

    # The log gets a writable tmpfs: what fails is the switch of the alternatives.
    read_only = netns()
    run = _as_container(read_only, "/bin/sh", str(script), writable=(str(log),), env={"IPTABLES": str(link)})
    assert run.returncode != 0
    assert "Read-only file system" in run.stderr, run.stderr
    assert _masquerade_rules(read_only) == []
    assert link.resolve() == wrapper

    writable = netns()
    run = _as_container(writable, "/bin/sh", str(script), read_only=False, env={"IPTABLES": str(link)})
    assert run.returncode == 0, run.stderr
    assert len(_masquerade_rules(writable)) == 1
    assert link.resolve() == Path(snat.IPTABLES).resolve()


def test_the_legacy_backend_would_need_the_hosts_xtables_lock(netns):
    """Why the init container mounts no /run/xtables.lock: only the legacy backend
    takes it, and in the container's read-only /run it cannot even create it."""
    require_tool("iptables-legacy")
    run = _as_container(netns(), "iptables-legacy", "-w", "-t", "nat", "-S", "POSTROUTING")
    assert run.returncode != 0
    assert "/run/xtables.lock" in run.stderr and "Read-only file system" in run.stderr, run.stderr
