"""Boot scripts and manifests as rendered: shellcheck, no secrets, manifest
schemas, and the per-start scripts run for real (a network namespace for the
Nebula wait, a loop device for the model volume)."""

from __future__ import annotations

import base64
import gzip
import ipaddress
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components.aws import hostboot
from tests import upstream
from tests.conftest import ROOT, require_root, require_tool
from tests.aws.test_gpu_worker import boot_files
from tools import harness, mocks

KUBERNETES_VERSION = "1.34"        # k3s v1.34 (components/versions.py)
_RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# The HelmChart fields we use, with the types of helm-controller's CRD
# (k3s-io/helm-controller pkg/crds/yaml/generated/helm.cattle.io_helmcharts.yaml).
HELMCHART_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "helm.cattle.io/v1"},
        "kind": {"const": "HelmChart"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["chart"],
            "additionalProperties": False,
            "properties": {
                "chart": {"type": "string"}, "repo": {"type": "string"}, "version": {"type": "string"},
                "targetNamespace": {"type": "string"}, "createNamespace": {"type": "boolean"},
                "valuesContent": {"type": "string"}, "bootstrap": {"type": "boolean"},
                "failurePolicy": {"enum": ["abort", "reinstall"]}, "timeout": {"type": "string"},
            },
        },
    },
}


@pytest.fixture(scope="module")
def plan():
    """With an EC2 lighthouse, so its boot script is checked too (a worker's boot
    script does not depend on the placement: its Nebula files come from SSM)."""
    return harness.run_stack("dev", {"hybrid-llm:gpuWorkers": "2", "hybrid-llm:lighthousePlacement": "ec2",
                                     "hybrid-llm:lighthouseInstanceType": "t3.micro"})


def user_data(plan) -> dict[str, str]:
    """What each instance's cloud-init reads as user data: base64 decoded and, for
    a worker, gunzipped. Each is a script, never compressed bytes that a check
    below would silently find nothing in."""
    out = {}
    for instance in plan.of_type("aws:ec2/instance:Instance"):
        if "userData" in instance.inputs:
            out[instance.name] = instance.inputs["userData"]
    for lt in plan.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        out[lt.name] = mocks.decode_user_data(lt.inputs["userData"])
    for name, text in out.items():
        assert text.startswith("#!/bin/bash\n"), f"{name}: user data not decoded to a script"
    return out


def user_data_bytes(plan) -> dict[str, tuple[bytes, str]]:
    """Per host: the bytes EC2 counts against its limit (a launch template's user
    data after base64 decoding, an instance's text) and the published boot script
    they must unpack to."""
    out = {}
    for instance in plan.of_type("aws:ec2/instance:Instance"):
        if "userData" in instance.inputs:
            assert instance.name == "hybrid-llm-dev-lighthouse-instance"
            out[instance.name] = (instance.inputs["userData"].encode(), plan.file("lighthouse/boot.sh").content)
    for lt in plan.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        host = {spec["resourceType"]: spec["tags"]["Worker"] for spec in lt.plain()["tagSpecifications"]}["instance"]
        out[lt.name] = (base64.b64decode(lt.inputs["userData"], validate=True),
                        plan.file(f"workers/{host}/boot.sh").content)
    return out


def scripts(plan) -> dict[str, str]:
    """Every shell script that reaches an instance: the boot scripts and the
    scripts they install."""
    found = {}
    for item in plan.files:
        if item.path.endswith("boot.sh"):
            found[item.path] = item.content
            for path, content in boot_files(item.content).items():
                if content.startswith("#!"):
                    found[f"{item.path}:{path}"] = content
    return found


@pytest.mark.parametrize("placement", ["workers", "ec2", "homelab"])
def test_there_is_user_data_for_every_host(plan, placement):
    """Every instance the stack runs boots from user data: the workers' launch
    templates, and the lighthouse instance only where it runs on EC2."""
    from tests.conftest import PLACEMENTS

    if placement == "ec2":
        placed = plan
    else:
        placed = harness.run_stack("dev", {**PLACEMENTS[placement], "hybrid-llm:gpuWorkers": "2",
                                           "hybrid-llm:lighthouseInstanceType": "t3.micro"})
    assert placed.outputs["lighthousePlacement"].value == placement
    workers = {"hybrid-llm-dev-gpu-0-lt", "hybrid-llm-dev-gpu-1-lt"}
    expected = workers | ({"hybrid-llm-dev-lighthouse-instance"} if placement == "ec2" else set())
    assert set(user_data(placed)) == expected
    assert {r.name for r in placed.of_type("aws:ec2/instance:Instance")} == \
        {name.replace("-lt", "-instance") for name in expected}


def test_user_data_fits_the_ec2_limit(plan):
    """EC2 limits user data to 16384 bytes before base64: for a worker that is the
    gzip stream (gpu_worker.encode_user_data), which cloud-init decompresses, so
    it must unpack to exactly the published boot script."""
    found = user_data_bytes(plan)
    assert set(found) == set(user_data(plan))
    for name, (data, boot_script) in found.items():
        assert len(data) <= 16384, f"{name}: EC2 accepts at most 16 KiB of user data, got {len(data)}"
        if name.endswith("-lt"):
            assert data.startswith(b"\x1f\x8b"), f"{name}: the worker's user data is gzip"
            assert gzip.decompress(data).decode() == boot_script, name
        else:
            assert data.decode() == boot_script, name


def test_every_script_passes_shellcheck(plan, tmp_path):
    shellcheck = require_tool("shellcheck")
    found = scripts(plan)
    assert len(found) >= 8
    for name, content in found.items():
        path = tmp_path / (re.sub(r"[^A-Za-z0-9.]+", "_", name))
        path.write_text(content)
        result = subprocess.run([shellcheck, "--severity=style", "--shell=bash", str(path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{name}\n{result.stdout}"


def test_no_secret_reaches_user_data(plan):
    secrets = [p.plain()["value"] for p in plan.of_type("aws:ssm/parameter:Parameter")
               if p.inputs.get("type") == "SecureString"]
    secrets += list(plan.outputs["kubeconfigs"].value.values())
    assert len(secrets) >= 2 * 11
    for name, text in user_data(plan).items():
        assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, name
        assert not re.search(r"(?i)(password|passwd|K3S_TOKEN|--token|aws_secret_access_key)", text), name
        for secret in secrets:
            for line in secret.strip().splitlines():
                if len(line) >= 24 and "-----" not in line:
                    assert line not in text, f"{name} carries a line of a secret"


def test_downloads_are_pinned_and_verified(plan):
    from components import versions
    for item in plan.files:
        if not item.path.endswith("boot.sh"):
            continue
        urls = re.findall(r'install_release \w+ "([^"]+)" "([0-9a-f]{64})"', item.content)
        assert urls, item.path
        pinned = {(p.urls[a], p.sha256[a]) for p in (versions.NEBULA, versions.K3S) for a in p.urls}
        assert set(urls) <= pinned, item.path
    worker = plan.file("workers/gpu-0/boot.sh").content
    assert f'"{versions.K3S.url("amd64")}" "{versions.K3S.digest("amd64")}"' in worker


def test_manifests_are_valid_and_named_for_k3s(plan):
    manifests = [f for f in plan.files if "/manifests/" in f.path]
    assert {Path(f.path).name for f in manifests} >= {"nvidia-device-plugin.yaml", "ollama-models-pv.yaml",
                                                      "liqo.yaml", "liqo-tenant.yaml"}
    for item in manifests:
        assert _RFC1123.match(Path(item.path).stem), item.path
        for document in yaml.safe_load_all(item.content):
            if document["apiVersion"] == "helm.cattle.io/v1":
                jsonschema.validate(document, HELMCHART_SCHEMA)
            elif upstream.is_liqo(document):
                upstream.validate_liqo(document)
            else:
                kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            assert _RFC1123.match(document["metadata"]["name"])
        files = boot_files(plan.file(item.path.split("/manifests/")[0] + "/boot.sh").content)
        on_instance = f"/var/lib/rancher/k3s/server/manifests/{Path(item.path).name}"
        assert files[on_instance].strip() == item.content.strip()


def test_schema_check_catches_a_broken_manifest():
    broken = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "x"},
              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": "ReadWriteOnce"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart", "metadata":
                             {"name": "x", "namespace": "y"}, "spec": {"chart": "c", "values": {}}},
                            HELMCHART_SCHEMA)


def test_templates_refuse_missing_and_unused_values():
    with pytest.raises(ValueError, match="missing values \\['address'"):
        hostboot.render("wait-nebula.sh", {"iface": "nebula1", "timeout_seconds": 1})
    with pytest.raises(ValueError, match="unused values \\['surplus'\\]"):
        hostboot.render("units/nebula.service", {"nebula_dir": "/etc/nebula", "surplus": 1})


# --- the per-start scripts, run for real ----------------------------------------------


def _render_to(tmp_path: Path, template: str, values: dict) -> Path:
    path = tmp_path / template.replace("/", "_")
    path.write_text(hostboot.render(template, values))
    path.chmod(0o755)
    return path


def test_wait_nebula_returns_once_the_interface_has_the_address(tmp_path):
    require_root("creates a network namespace with a tun device named nebula1, as Nebula makes")
    ip = require_tool("ip")
    script = _render_to(tmp_path, "wait-nebula.sh",
                        {"iface": "nebula1", "address": "10.42.2.1", "timeout_seconds": 3})
    namespace = f"hl-{uuid.uuid4().hex[:8]}"
    subprocess.run([ip, "netns", "add", namespace], check=True)
    try:
        def run() -> subprocess.CompletedProcess:
            return subprocess.run([ip, "netns", "exec", namespace, "bash", str(script)],
                                  capture_output=True, text=True, timeout=30)

        missing = run()
        assert missing.returncode == 1 and "nebula1 has no address 10.42.2.1" in missing.stderr
        subprocess.run([ip, "netns", "exec", namespace, ip, "tuntap", "add", "dev", "nebula1", "mode", "tun"],
                       check=True)
        subprocess.run([ip, "-n", namespace, "addr", "add", "10.42.2.10/16", "dev", "nebula1"], check=True)
        assert run().returncode == 1, "another address (10.42.2.10 contains 10.42.2.1 as a prefix) is not ours"
        subprocess.run([ip, "-n", namespace, "addr", "add", "10.42.2.1/16", "dev", "nebula1"], check=True)
        assert run().returncode == 0
    finally:
        subprocess.run([ip, "netns", "delete", namespace], check=False)


@pytest.fixture
def loop_device(tmp_path):
    require_root("attaches a loop device")
    losetup = require_tool("losetup")
    for tool in ("blkid", "mkfs.ext4", "resize2fs", "e2fsck", "dumpe2fs", "blockdev", "mount", "umount",
                 "mountpoint"):
        require_tool(tool)
    image = tmp_path / "volume.img"
    image.write_bytes(b"")
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    device = subprocess.run([losetup, "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    yield device
    subprocess.run([losetup, "--detach", device], check=False)


def _model_volume(tmp_path: Path, device: str, mountpoint: Path) -> subprocess.CompletedProcess:
    script = _render_to(tmp_path, "model-volume.sh", {"device": device, "mountpoint": mountpoint,
                                                      "label": "hybrid-models", "timeout_seconds": 2,
                                                      "images_dir": tmp_path / "containerd",
                                                      "images_subdir": "containerd"})
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)


def _unmount_all(tmp_path: Path, mountpoint: Path, check: bool = True) -> None:
    """The images bind first, then the volume (as a stop does)."""
    subprocess.run(["umount", str(tmp_path / "containerd")], check=check)
    subprocess.run(["umount", str(mountpoint)], check=check)


def _mounts_at(path: Path) -> int:
    return subprocess.run(["findmnt", "-n", "-o", "TARGET", "--mountpoint", str(path)],
                          capture_output=True, text=True).stdout.count("\n")


def test_model_volume_is_formatted_once_and_keeps_its_models(tmp_path, loop_device):
    mountpoint = tmp_path / "models"
    try:
        first = _model_volume(tmp_path, loop_device, mountpoint)
        assert first.returncode == 0, first.stderr
        assert "creating an ext4 filesystem" in first.stderr
        (mountpoint / "llama3.2-3b.bin").write_text("weights")
        # containerd's root is the volume's containerd/ directory
        (tmp_path / "containerd" / "layer.tar").write_text("image layer")
        assert (mountpoint / "containerd" / "layer.tar").read_text() == "image layer"
        assert _model_volume(tmp_path, loop_device, mountpoint).returncode == 0, "mounted: a no-op"
        assert _mounts_at(tmp_path / "containerd") == 1 and _mounts_at(mountpoint) == 1
        _unmount_all(tmp_path, mountpoint)
        assert not (tmp_path / "containerd" / "layer.tar").exists(), "unbound: the root disk holds nothing"

        again = _model_volume(tmp_path, loop_device, mountpoint)       # the next start / a new instance
        assert again.returncode == 0, again.stderr
        assert "creating" not in again.stderr and "growing" not in again.stderr
        assert (mountpoint / "llama3.2-3b.bin").read_text() == "weights"
        assert (tmp_path / "containerd" / "layer.tar").read_text() == "image layer"
        reserved = subprocess.run(["dumpe2fs", "-h", loop_device], capture_output=True, text=True).stdout
        assert re.search(r"^Reserved block count:\s+0$", reserved, re.MULTILINE), "mkfs -m 0: nothing held back"
    finally:
        _unmount_all(tmp_path, mountpoint, check=False)


def test_model_volume_grows_its_filesystem_when_the_volume_grew(tmp_path, loop_device):
    mountpoint = tmp_path / "models"

    def size_bytes() -> int:
        stat = subprocess.run(["stat", "-f", "-c", "%b %S", str(mountpoint)], check=True,
                              capture_output=True, text=True).stdout.split()
        return int(stat[0]) * int(stat[1])

    try:
        assert _model_volume(tmp_path, loop_device, mountpoint).returncode == 0
        (mountpoint / "model.bin").write_text("weights")
        before = size_bytes()
        _unmount_all(tmp_path, mountpoint)
        image = subprocess.run(["losetup", "--noheadings", "--output", "BACK-FILE", loop_device], check=True,
                               capture_output=True, text=True).stdout.strip()
        subprocess.run(["truncate", "-s", "128M", image], check=True)            # modelVolumeGiB raised
        subprocess.run(["losetup", "--set-capacity", loop_device], check=True)
        grown = _model_volume(tmp_path, loop_device, mountpoint)
        assert grown.returncode == 0, grown.stderr
        assert "growing the filesystem" in grown.stderr
        assert size_bytes() > 1.8 * before
        assert (mountpoint / "model.bin").read_text() == "weights"
    finally:
        _unmount_all(tmp_path, mountpoint, check=False)


def test_model_volume_never_formats_a_device_that_holds_something_else(tmp_path, loop_device):
    # An MBR partition table (one Linux partition), no filesystem on the disk itself.
    table = bytearray(512)
    table[446:462] = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
    table[510:512] = b"\x55\xaa"
    with open(loop_device, "r+b") as disk:
        disk.write(table)
    result = _model_volume(tmp_path, loop_device, tmp_path / "models")
    assert result.returncode == 1
    assert "not touching it" in result.stderr
    probe = subprocess.run(["blkid", "-p", "-o", "export", loop_device], capture_output=True, text=True)
    assert "PTTYPE=dos" in probe.stdout and "TYPE=ext4" not in probe.stdout


# A stand-in for the AWS CLI's `ssm get-parameters`: answers from a JSON store (a
# name listed in STUB_LATE appears only from the second call on), fails the first
# STUB_FAIL calls, and logs each call (start, end, arguments) as a JSON line.
_AWS_STUB = r'''#!/usr/bin/env python3
import json, os, sys, time
args = sys.argv[1:]
log, state = os.environ["STUB_LOG"], os.environ["STUB_LOG"] + ".count"
count = int(open(state).read()) if os.path.exists(state) else 0
open(state, "w").write(str(count + 1))
start = time.time()
# STUB_BARRIER=n: each call waits (up to 20 s) until n calls have begun, so calls
# made one after another never meet it and say so.
open(f"{log}.began.{os.getpid()}", "w").close()
barrier, met = int(os.environ.get("STUB_BARRIER", "0")), True
while barrier:
    met = len([f for f in os.listdir(os.path.dirname(log)) if ".began." in f]) >= barrier
    if met or time.time() - start > 20:
        break
    time.sleep(0.05)
names = args[args.index("--names") + 1:]
names = names[:next((i for i, a in enumerate(names) if a.startswith("--")), len(names))]
with open(log, "a") as out:
    out.write(json.dumps({"start": start, "met": met, "args": args, "names": names}) + "\n")
if args[:2] != ["ssm", "get-parameters"] or count < int(os.environ.get("STUB_FAIL", "0")):
    print("An error occurred (ThrottlingException): Rate exceeded", file=sys.stderr)
    sys.exit(254)
store = json.load(open(os.environ["STUB_STORE"]))
late = set(os.environ.get("STUB_LATE", "").split())
found = [n for n in names if n in store and (count > 0 or n not in late)]
print(json.dumps({"Parameters": [{"Name": n, "Type": "SecureString", "Value": store[n]} for n in found],
                  "InvalidParameters": [n for n in names if n not in found]}))
'''


@pytest.fixture
def ssm_stub(tmp_path):
    """Runs the rendered fetch script against the stub; returns (run, calls)."""
    from components.aws import k3s_pki
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    (stub_dir / "aws").write_text(_AWS_STUB)
    (stub_dir / "aws").chmod(0o755)
    script = _render_to(tmp_path, "ssm-fetch.sh", {"region": "eu-west-3"})
    prefix = "/hybrid-llm/dev/hosts/gpu-0/k3s"
    store = {f"{prefix}/{name}": f"-----{name}-----\nvalue of {name}" for name, _ in k3s_pki.tls_files()}
    (tmp_path / "store.json").write_text(json.dumps(store))
    log = tmp_path / "calls.jsonl"

    def run(specs: list[str], **env) -> subprocess.CompletedProcess:
        Path(f"{log}.count").unlink(missing_ok=True)       # STUB_FAIL and STUB_LATE count per run
        environ = {"PATH": f"{stub_dir}:/usr/bin:/bin", "STUB_LOG": str(log),
                   "STUB_STORE": str(tmp_path / "store.json"), **env}
        return subprocess.run(["bash", str(script), prefix, str(tmp_path / "tls"), *specs],
                              capture_output=True, text=True, timeout=120, env=environ)

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    specs = [f"{name}:{mode}" for name, mode in k3s_pki.tls_files()]
    return run, calls, specs, store, tmp_path / "tls"


def test_ssm_fetch_asks_once_per_ten_names_all_batches_at_once(ssm_stub):
    """The k3s CA files are on the cold-start path (k3s waits for them): eleven
    files are two GetParameters calls that run at the same time, not eleven CLI
    processes in a row."""
    run, calls, specs, store, out = ssm_stub
    assert len(specs) == 11
    result = run(specs, STUB_BARRIER="2")
    assert result.returncode == 0, result.stderr
    made = calls()
    assert sorted(len(c["names"]) for c in made) == [1, 10]
    assert sorted(n for c in made for n in c["names"]) == sorted(store)
    for call in made:
        assert call["args"][:2] == ["ssm", "get-parameters"]
        assert "--with-decryption" in call["args"] and call["args"][call["args"].index("--region") + 1] == "eu-west-3"
        assert call["args"][call["args"].index("--cli-connect-timeout") + 1] == "5"
    assert all(call["met"] for call in made), "the two batches run at the same time"
    for spec in specs:
        name, mode = spec.rsplit(":", 1)
        path = out / name
        assert path.read_text() == store[f"/hybrid-llm/dev/hosts/gpu-0/k3s/{name}"] + "\n"
        assert oct(path.stat().st_mode & 0o777) == oct(int(mode, 8)), name
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == {spec.rsplit(":", 1)[0] for spec in specs}, "no temporary file left behind"


def test_ssm_fetch_retries_quickly_and_never_logs_a_value(ssm_stub):
    run, calls, specs, store, out = ssm_stub
    failed_once = run(specs[:3], STUB_FAIL="1")
    assert failed_once.returncode == 0, failed_once.stderr
    assert len(calls()) == 2, "one failure, one retry (after 1 s, no longer a fixed 10 s)"
    name = specs[3].rsplit(":", 1)[0]
    late = run([specs[3]], STUB_LATE=f"/hybrid-llm/dev/hosts/gpu-0/k3s/{name}")
    assert late.returncode == 0, late.stderr
    assert "not in SSM (yet)" in late.stderr and (out / name).is_file()
    for text in (failed_once.stderr, late.stderr):
        assert "value of" not in text


def test_ssm_fetch_gives_up_within_its_budget_and_writes_nothing(ssm_stub):
    run, calls, specs, store, out = ssm_stub
    name = specs[0].rsplit(":", 1)[0]
    result = run(specs[:2], HYBRID_LLM_FETCH_BUDGET="0", STUB_LATE=f"/hybrid-llm/dev/hosts/gpu-0/k3s/{name}")
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "within 0s" in result.stderr
    assert "value of" not in result.stderr
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], "all or nothing per batch"
    assert run(["server-ca.crt"]).returncode == 2, "a NAME without a MODE is refused"


def test_model_volume_waits_for_the_device_then_fails_clearly(tmp_path):
    result = _model_volume(tmp_path, "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0000missing",
                           tmp_path / "models")
    assert result.returncode == 1
    assert "is not attached after 2s" in result.stderr


# --- the offline plan tool shows it all -------------------------------------------------


def _render(tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "render"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "plan.py"), "--render", str(out), *extra],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_plan_render_shows_boot_scripts_and_redacted_kubeconfigs(tmp_path):
    out = _render(tmp_path)
    assert not (out / "lighthouse").exists(), "the default placement (workers) runs no lighthouse instance"
    assert (out / "workers" / "gpu-0" / "boot.sh").read_text().startswith("#!/bin/bash")
    with_ec2 = _render(tmp_path / "ec2", "--set", "hybrid-llm:lighthousePlacement=ec2")
    assert (with_ec2 / "lighthouse" / "boot.sh").read_text().startswith("#!/bin/bash")
    assert (with_ec2 / "workers" / "gpu-0" / "boot.sh").read_text().startswith("#!/bin/bash")
    assert (out / "iam" / "gpu-0" / "parameters.json").is_file()
    kubeconfig = (out / "workers" / "gpu-0" / "kubeconfig.yaml").read_text()
    assert kubeconfig.startswith("[secret")
    assert (out / "workers" / "gpu-0" / "kubeconfig.yaml").stat().st_mode & 0o077 == 0


def test_plan_render_with_secrets_writes_a_working_kubeconfig(tmp_path):
    out = _render(tmp_path, "--show-secrets")
    config = yaml.safe_load((out / "workers" / "gpu-0" / "kubeconfig.yaml").read_text())
    server = config["clusters"][0]["cluster"]["server"]
    assert server == "https://10.42.2.1:6443"
    assert ipaddress.ip_address(server.split("//")[1].split(":")[0]) in ipaddress.ip_network("10.42.0.0/16")
    assert base64.b64decode(config["users"][0]["user"]["client-key-data"]).startswith(b"-----BEGIN")
