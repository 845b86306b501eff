"""GPU workers, through the whole program under mocks."""

from __future__ import annotations

import base64
import gzip
import ipaddress
import json
import re

import pytest
import yaml

from components.aws import k3s_pki
from components.aws.gpu_worker import DLAMI_PARAMETER, encode_user_data
from components.config import ConfigError
from tests import iam_sim
from tests.aws.test_lighthouse import PARAMETER_ARN, ami_answer, role_documents
from tools import harness, mocks

TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
VOLUME = "aws:ebs/volume:Volume"


def plan_and_boot(request, host: str):
    """The plan that runs `host` (the EC2 lighthouse: lighthousePlacement ec2) and its boot script."""
    if host == "lighthouse":
        plan = request.getfixturevalue("ec2_plan")
        return plan, plan.file("lighthouse/boot.sh").content
    plan = request.getfixturevalue("dev_plan")
    return plan, plan.file(f"workers/{host}/boot.sh").content


def worker(plan, host: str, type_token: str, suffix: str):
    (found,) = [r for r in plan.of_type(type_token) if r.name == f"hybrid-llm-dev-{host}-{suffix}"]
    return found


def template(plan, host="gpu-0"):
    return worker(plan, host, TEMPLATE, "lt").plain()


def boot_files(script: str) -> dict[str, str]:
    """The files a first-boot script writes: path -> content."""
    pattern = re.compile(r"^put_file \d{4} '([^']+)' <<'(\w+)'\n(.*?)\n\2$", re.MULTILINE | re.DOTALL)
    return {m.group(1): m.group(3) for m in pattern.finditer(script)}


def unit(plan, host: str, name: str) -> dict[str, dict[str, str]]:
    """A systemd unit as section -> key -> value (a repeated key keeps the last;
    backslash continuations are joined as systemd joins them)."""
    text = boot_files(plan.file(f"workers/{host}/boot.sh").content)[f"/etc/systemd/system/{name}"]
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.replace("\\\n", " ").splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key] = value
    return sections


def test_spot_is_persistent_and_stops_on_interruption(dev_plan):
    assert template(dev_plan)["instanceMarketOptions"] == {
        "marketType": "spot",
        "spotOptions": {"spotInstanceType": "persistent", "instanceInterruptionBehavior": "stop",
                        "validUntil": "2099-01-01T00:00:00Z"},
    }


def test_spot_max_price_and_on_demand(run_program):
    priced = run_program({"hybrid-llm:gpuSpotMaxPrice": "0.25"})
    assert template(priced)["instanceMarketOptions"]["spotOptions"]["maxPrice"] == "0.25"
    on_demand = run_program({"hybrid-llm:gpuSpot": "false"})
    assert "instanceMarketOptions" not in template(on_demand)


def test_launch_template_machine(run_program):
    plan = run_program({"hybrid-llm:gpuRootVolumeGiB": "150", "hybrid-llm:gpuInstanceType": "g5.xlarge"})
    lt = template(plan)
    assert lt["imageId"] == ami_answer(DLAMI_PARAMETER)
    assert lt["instanceType"] == "g5.xlarge"
    assert lt["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                     "httpPutResponseHopLimit": 1}
    (root,) = lt["blockDeviceMappings"]
    assert root["deviceName"] == "/dev/sda1"
    assert root["ebs"] == {"volumeType": "gp3", "volumeSize": 150, "encrypted": "true",
                           "deleteOnTermination": "true"}
    (profile,) = [r for r in plan.of_type("aws:iam/instanceProfile:InstanceProfile")
                  if r.name == "hybrid-llm-dev-gpu-0-profile"]
    assert lt["iamInstanceProfile"] == {"arn": profile.state["arn"]}
    stream = base64.b64decode(lt["userData"], validate=True)
    assert stream.startswith(b"\x1f\x8b"), "gzip, which cloud-init decompresses itself"
    assert gzip.decompress(stream).decode() == plan.file("workers/gpu-0/boot.sh").content
    assert mocks.decode_user_data(lt["userData"]) == plan.file("workers/gpu-0/boot.sh").content
    tagged = {spec["resourceType"]: spec["tags"]["Worker"] for spec in lt["tagSpecifications"]}
    assert tagged == {"instance": "gpu-0", "volume": "gpu-0"}


def test_root_volume_is_the_amis_snapshot_unless_a_size_is_set(dev_plan, run_program):
    """gpuRootVolumeGiB 0 (the default) names no size, so EC2 takes the AMI
    snapshot's and a new AMI release never changes the template."""
    assert dev_plan.config["hybrid-llm:gpuRootVolumeGiB"] == "0"
    (root,) = template(dev_plan)["blockDeviceMappings"]
    assert root["deviceName"] == "/dev/sda1"
    assert root["ebs"] == {"volumeType": "gp3", "encrypted": "true", "deleteOnTermination": "true"}
    (root,) = template(run_program({"hybrid-llm:gpuRootVolumeGiB": "100"}))["blockDeviceMappings"]
    assert root["ebs"] == {"volumeType": "gp3", "volumeSize": 100, "encrypted": "true",
                           "deleteOnTermination": "true"}


def test_a_root_volume_below_the_ami_snapshot_is_one_config_error(run_program):
    assert mocks.AwsMocks().ami_root_gib == 75, "the mocks' AMI snapshot"
    with pytest.raises(ConfigError) as info:
        run_program({"hybrid-llm:gpuRootVolumeGiB": "74"})
    message = str(info.value)
    assert message.startswith("hybrid-llm:gpuRootVolumeGiB: 74 GiB is smaller than the root snapshot")
    assert "(75 GiB)" in message and "\n" not in message
    (root,) = template(run_program({"hybrid-llm:gpuRootVolumeGiB": "75"}))["blockDeviceMappings"]
    assert root["ebs"]["volumeSize"] == 75


def test_user_data_encoding_is_deterministic():
    """A changed user data is a new template version, which replaces the worker:
    the same boot script must always give the same bytes (no name, mtime 0, OS
    byte 255 whatever the Python version)."""
    text = "#!/bin/bash\necho worker\n" * 50
    encoded = encode_user_data(text)
    assert encode_user_data(text) == encoded
    stream = base64.b64decode(encoded, validate=True)
    assert stream[:4] == b"\x1f\x8b\x08\x00", "deflate, no flags (no file name, no comment)"
    assert stream[4:8] == b"\x00\x00\x00\x00", "mtime 0"
    assert stream[8:10] == b"\x02\xff", "best compression, OS unknown"
    assert gzip.decompress(stream).decode() == text
    assert mocks.decode_user_data(encoded) == text


def test_ami_override_and_its_root_device(monkeypatch, run_program):
    answer = mocks._INVOKES["aws:ec2/getAmi:getAmi"]
    asked = []

    def other_root(m, args):
        asked.append(args["filters"])
        return {**answer(m, args), "rootDeviceName": "/dev/xvda"}

    monkeypatch.setitem(mocks._INVOKES, "aws:ec2/getAmi:getAmi", other_root)
    plan = run_program({"hybrid-llm:gpuAmiId": "ami-0123456789abcdef0"})
    lt = template(plan)
    assert lt["imageId"] == "ami-0123456789abcdef0"
    assert asked == [[{"name": "image-id", "values": ["ami-0123456789abcdef0"]}]]
    assert lt["blockDeviceMappings"][0]["deviceName"] == "/dev/xvda", "the root mapping follows the AMI"


def test_instance_launches_from_the_template_with_a_public_ip(dev_plan):
    instance = worker(dev_plan, "gpu-0", "aws:ec2/instance:Instance", "instance").plain()
    lt = worker(dev_plan, "gpu-0", TEMPLATE, "lt")
    (subnet,) = dev_plan.of_type("aws:ec2/subnet:Subnet")
    group = next(r for r in dev_plan.of_type("aws:ec2/securityGroup:SecurityGroup") if r.name.endswith("-worker-sg"))
    assert instance["launchTemplate"] == {"id": lt.id, "version": str(lt.state["latestVersion"])}
    assert instance["subnetId"] == subnet.id
    assert instance["vpcSecurityGroupIds"] == [group.id]
    assert instance["associatePublicIpAddress"] is True
    assert dev_plan.of_type("aws:ec2/natGateway:NatGateway") == []


def test_model_volume_encrypted_in_the_instance_az_and_attached(run_program):
    plan = run_program({"hybrid-llm:gpuWorkers": "2", "hybrid-llm:modelVolumeGiB": "250"})
    for host in ("gpu-0", "gpu-1"):
        volume = worker(plan, host, VOLUME, "models")
        instance = worker(plan, host, "aws:ec2/instance:Instance", "instance")
        assert (volume.inputs["type"], volume.inputs["encrypted"], volume.inputs["size"]) == ("gp3", True, 250)
        assert volume.inputs["availabilityZone"] == instance.state["availabilityZone"]
        attachment = worker(plan, host, "aws:ec2/volumeAttachment:VolumeAttachment", "models-attachment")
        assert (attachment.inputs["instanceId"], attachment.inputs["volumeId"]) == (instance.id, volume.id)
        assert attachment.inputs["stopInstanceBeforeDetaching"] is True
        assert plan.outputs["modelVolumeIds"].value[host] == volume.id
        assert plan.outputs["workerInstanceIds"].value[host] == instance.id


def test_model_volume_retention_follows_config(dev_plan, run_program):
    def kept(plan):
        return {r.name: r.retain_on_delete for r in plan.resources}
    assert kept(dev_plan)["hybrid-llm-dev-gpu-0-models"] is False
    seen = kept(run_program({"hybrid-llm:protectModelVolume": "true"}))
    assert seen["hybrid-llm-dev-gpu-0-models"] is True
    assert seen["hybrid-llm-dev-gpu-0-instance"] is False


def test_boot_mounts_the_volume_by_its_id(dev_plan):
    volume = worker(dev_plan, "gpu-0", VOLUME, "models")
    boot = dev_plan.file("workers/gpu-0/boot.sh").content
    script = boot_files(boot)["/usr/local/sbin/hybrid-llm-model-volume"]
    expected = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_" + volume.id.replace("-", "")
    assert f'DEVICE="{expected}"' in script
    assert not re.search(r"/dev/(nvme\d|xvd|sd[a-z])", script), "never a guessed device name"


def test_k3s_flags(run_program):
    plan = run_program({"hybrid-llm:gpuWorkers": "2", "hybrid-llm:gpuClusterPodCidr": "10.60.0.0/16",
                        "hybrid-llm:gpuClusterServiceCidr": "10.61.0.0/20"})
    pod_ranges = {}
    for host, ip in plan.outputs["workerNebulaIps"].value.items():
        exec_start = unit(plan, host, "k3s.service")["Service"]["ExecStart"]
        words = exec_start.split()
        assert words[:2] == ["/usr/local/bin/k3s", "server"]
        flags = dict(w[2:].split("=", 1) for w in words[2:])
        assert flags["node-ip"] == flags["advertise-address"] == flags["tls-san"] == ip
        assert flags["node-name"] == host
        assert flags["flannel-iface"] == "nebula1"
        # Each worker's own /24 of gpuClusterPodCidr: its certificate carries it and
        # the homelab routes it via this worker.
        pod_ranges[host] = ipaddress.ip_network(flags["cluster-cidr"])
        assert pod_ranges[host].subnet_of(ipaddress.ip_network("10.60.0.0/16")) and pod_ranges[host].prefixlen == 24
        assert flags["service-cidr"] == "10.61.0.0/20"
        assert ipaddress.ip_address(flags["cluster-dns"]) in ipaddress.ip_network("10.61.0.0/20")
        assert flags["default-runtime"] == "nvidia"
        wait = boot_files(plan.file(f"workers/{host}/boot.sh").content)["/usr/local/sbin/hybrid-llm-wait-nebula"]
        assert f'ADDRESS="{ip}"' in wait
    assert not pod_ranges["gpu-0"].overlaps(pod_ranges["gpu-1"])


def test_k3s_starts_only_after_nebula_is_up_and_its_files_are_in_place(dev_plan):
    k3s = unit(dev_plan, "gpu-0", "k3s.service")["Unit"]
    before_k3s = {"hybrid-llm-nebula-ready.service", "hybrid-llm-k3s-tls.service", "hybrid-llm-model-volume.service"}
    assert before_k3s <= set(k3s["Requires"].split()) and before_k3s <= set(k3s["After"].split())
    ready = unit(dev_plan, "gpu-0", "hybrid-llm-nebula-ready.service")
    assert ready["Unit"]["Requires"] == ready["Unit"]["After"] == "nebula.service"
    assert ready["Service"]["ExecStart"] == "/usr/local/sbin/hybrid-llm-wait-nebula"
    nebula = unit(dev_plan, "gpu-0", "nebula.service")
    assert "hybrid-llm-nebula-config.service" in nebula["Unit"]["Requires"].split()
    assert nebula["Service"]["Restart"] == "always"


def test_the_cold_start_path_waits_only_for_what_it_needs(dev_plan):
    """A held request waits for this path at every start. The two SSM fetches and
    the model volume start together (none waits for another); nebula waits only for
    its own files; k3s only for what it uses at start: nebula1's address (it binds the
    Nebula IP), its CAs, the mounted model volume. The waits poll every 0.2 s, and
    the fetch asks once per ten names, all batches at once (test_userdata.py)."""
    def words(name: str, key: str) -> set[str]:
        return set(unit(dev_plan, "gpu-0", name)["Unit"].get(key, "").split())

    for fetch in ("hybrid-llm-nebula-config.service", "hybrid-llm-k3s-tls.service"):
        assert words(fetch, "After") == {"network-online.target"} and words(fetch, "Requires") == set()
    assert words("hybrid-llm-model-volume.service", "After") == {"local-fs.target"}
    assert words("nebula.service", "After") == {"network-online.target", "hybrid-llm-nebula-config.service"}
    assert words("hybrid-llm-nebula-ready.service", "After") == {"nebula.service"}
    needed = {"hybrid-llm-nebula-ready.service", "hybrid-llm-k3s-tls.service", "hybrid-llm-model-volume.service"}
    assert words("k3s.service", "Requires") == needed
    assert words("k3s.service", "After") == needed | {"network-online.target"}
    files = boot_files(dev_plan.file("workers/gpu-0/boot.sh").content)
    for path in ("/usr/local/sbin/hybrid-llm-wait-nebula", "/usr/local/sbin/hybrid-llm-model-volume"):
        assert re.search(r"\bPOLL=0\.2\b", files[path]) and 'sleep "$POLL"' in files[path], path
        assert "sleep 1\n" not in files[path], path
    fetch = files["/usr/local/sbin/hybrid-llm-ssm-fetch"]
    assert "ssm get-parameters " in fetch and "BATCH=10" in fetch and "get-parameter " not in fetch


def test_every_start_reads_the_hosts_own_files_from_ssm(dev_plan):
    nebula = unit(dev_plan, "gpu-0", "hybrid-llm-nebula-config.service")["Service"]["ExecStart"].split()
    assert nebula[:3] == ["/usr/local/sbin/hybrid-llm-ssm-fetch", "/hybrid-llm/dev/hosts/gpu-0/nebula", "/etc/nebula"]
    assert set(nebula[3:]) == {"ca.crt:0644", "host.crt:0644", "host.key:0600", "config.yml:0644"}

    tls = unit(dev_plan, "gpu-0", "hybrid-llm-k3s-tls.service")["Service"]["ExecStart"].split()
    prefix = "/hybrid-llm/dev/hosts/gpu-0/k3s"
    assert tls[:3] == ["/usr/local/sbin/hybrid-llm-ssm-fetch", prefix, "/var/lib/rancher/k3s/server/tls"]
    fetched = {spec.rsplit(":", 1)[0] for spec in tls[3:]}
    stored = {p.inputs["name"][len(prefix) + 1:] for p in dev_plan.of_type("aws:ssm/parameter:Parameter")
              if p.inputs["name"].startswith(prefix + "/")}
    assert fetched == stored == {f for f, _ in k3s_pki.tls_files()}
    assert all(spec.endswith(":0600") for spec in tls[3:] if ".key:" in spec)


def test_only_units_run_at_later_starts(dev_plan):
    """Everything that downloads is in the first-boot script; the units enabled
    for later starts only fetch SSM parameters and mount."""
    boot = dev_plan.file("workers/gpu-0/boot.sh").content
    files = boot_files(boot)
    for path, content in files.items():
        if path.startswith("/etc/systemd/system/"):
            assert "curl" not in content and "install_release" not in content
    assert "systemctl enable nebula.service k3s.service hybrid-llm-activity.timer" in boot
    for path in ("/usr/local/sbin/hybrid-llm-model-volume", "/usr/local/sbin/hybrid-llm-ssm-fetch"):
        assert "curl" not in files[path]


def test_activity_agent_and_its_timer(dev_plan):
    files = boot_files(dev_plan.file("workers/gpu-0/boot.sh").content)
    agent = files["/usr/local/sbin/hybrid-llm-activity"]
    assert 'NAMESPACE="HybridLLM"' in agent
    for metric in ("Activity", "Ready", "GpuUtilization"):
        assert f"datum {metric} " in agent
    assert "/api/ps" not in agent, "a loaded model is not work (DESIGN decision 6)"
    assert "/api/version" in agent and "nvidia-smi --query-gpu=utilization.gpu" in agent
    # At second 0 of every minute, so a run describes the minute it starts in.
    timer = unit(dev_plan, "gpu-0", "hybrid-llm-activity.timer")["Timer"]
    assert timer == {"OnCalendar": "*-*-* *:*:00", "AccuracySec": "1s"}
    service = unit(dev_plan, "gpu-0", "hybrid-llm-activity.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == "/usr/local/sbin/hybrid-llm-activity"
    # A oneshot has no start timeout unless given one; a run must end before the next.
    assert service["Service"]["TimeoutStartSec"] == "57s"
    # Not ordered after k3s: its start (Type=notify) can take minutes, and every
    # minute from boot needs its point (Ready 0 until Ollama answers).
    assert "After" not in service["Unit"]


def test_role_reads_only_own_parameters_and_publishes_only_its_namespace(run_program):
    plan = run_program({"hybrid-llm:gpuWorkers": "2"})
    documents = role_documents(plan, "gpu-0")
    for own in ("gpu-0/nebula/host.key", "gpu-0/k3s/server-ca.key", "gpu-0/k3s/etcd/peer-ca.key"):
        assert iam_sim.allowed(documents, "ssm:GetParameter", f"{PARAMETER_ARN}/{own}")
        assert iam_sim.allowed(documents, "ssm:GetParameters", f"{PARAMETER_ARN}/{own}"), "what the fetch calls"
    for other in ("gpu-1/nebula/host.key", "gpu-1/k3s/client-ca.key", "lighthouse/nebula/host.key"):
        assert not iam_sim.allowed(documents, "ssm:GetParameter", f"{PARAMETER_ARN}/{other}")
        assert not iam_sim.allowed(documents, "ssm:GetParameters", f"{PARAMETER_ARN}/{other}")
        assert not iam_sim.allowed(documents, "ssm:GetParametersByPath", f"{PARAMETER_ARN}/{other}")
    assert iam_sim.allowed(documents, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "HybridLLM"})
    assert not iam_sim.allowed(documents, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "AWS/EC2"})
    assert not iam_sim.allowed(documents, "cloudwatch:PutMetricData", "*", {})
    rendered = json.loads(plan.file("iam/gpu-0/metrics.json").content)
    assert rendered["Statement"][0]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "HybridLLM"}}


def test_no_wildcard_action_and_writes_are_conditioned(run_program):
    plan = run_program({"hybrid-llm:gpuWorkers": "2"})
    for policy in plan.of_type("aws:iam/rolePolicy:RolePolicy"):
        for statement in json.loads(policy.inputs["policy"])["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in a for a in actions), policy.name
            writes = [a for a in actions if not a.split(":")[1].startswith(("Get", "List", "Describe"))]
            if statement["Effect"] == "Allow" and writes:
                assert statement.get("Resource") != "*" or "Condition" in statement, policy.name


@pytest.mark.parametrize("host", ["gpu-0", "gpu-1"])
def test_outputs_per_worker(run_program, host):
    plan = run_program({"hybrid-llm:gpuWorkers": "2"})
    assert plan.outputs["workerNebulaIps"].value == {"gpu-0": "10.42.2.1", "gpu-1": "10.42.2.2"}
    assert plan.outputs["kubeconfigs"].secret is True
    assert set(plan.outputs["kubeconfigs"].value) == {"gpu-0", "gpu-1"}
    for name in ("workerInstanceIds", "modelVolumeIds", "workerNebulaIps"):
        assert plan.outputs[name].secret is False
        assert host in plan.outputs[name].value


@pytest.mark.parametrize("host", ["lighthouse", "gpu-0"])
def test_fetched_nebula_files_are_the_meshs_parameters_and_match_its_config(request, host):
    plan, boot = plan_and_boot(request, host)
    files = boot_files(boot)
    exec_start = files["/etc/systemd/system/hybrid-llm-nebula-config.service"].split("ExecStart=")[1].split()
    prefix, directory, specs = exec_start[1], exec_start[2], exec_start[3:]
    parameters = {p.inputs["name"]: p for p in plan.of_type("aws:ssm/parameter:Parameter")
                  if p.inputs["name"].startswith(prefix + "/")}
    assert {f"{prefix}/{spec.rsplit(':', 1)[0]}" for spec in specs} == set(parameters)
    assert parameters[f"{prefix}/host.key"].inputs["type"] == "SecureString"
    stored = parameters[f"{prefix}/config.yml"].plain()
    config = yaml.safe_load(stored.get("insecureValue", stored.get("value")))
    assert {config["pki"][k] for k in ("ca", "cert", "key")} == {f"{directory}/{n}" for n in ("ca.crt", "host.crt", "host.key")}
    assert f"-config {directory}/config.yml" in files["/etc/systemd/system/nebula.service"]
    if host != "lighthouse":
        assert f'IFACE="{config["tun"]["dev"]}"' in files["/usr/local/sbin/hybrid-llm-wait-nebula"]


@pytest.mark.parametrize("plan_fixture, hosts", [("dev_plan", ["gpu-0"]), ("ec2_plan", ["lighthouse", "gpu-0"]),
                                                  ("homelab_lighthouse_plan", ["gpu-0"])])
def test_instances_boot_only_after_their_parameters_exist(request, plan_fixture, hosts):
    plan = request.getfixturevalue(plan_fixture)
    instances = {r.name: r for r in plan.of_type("aws:ec2/instance:Instance")}
    assert sorted(instances) == sorted(f"hybrid-llm-dev-{host}-instance" for host in hosts)
    for host in hosts:
        own = {p.urn for p in plan.of_type("aws:ssm/parameter:Parameter")
               if p.inputs["name"].startswith(f"/hybrid-llm/dev/hosts/{host}/")}
        assert len(own) >= 4
        assert own <= set(instances[f"hybrid-llm-dev-{host}-instance"].dependencies), host


@pytest.mark.parametrize("host", ["lighthouse", "gpu-0"])
def test_a_daily_refresh_reloads_nebula_with_the_current_files(request, host):
    """A renewed certificate reaches a host that never stops (the EC2 lighthouse)."""
    _, boot = plan_and_boot(request, host)
    files = boot_files(boot)
    units = "/etc/systemd/system"
    refresh = files[f"{units}/hybrid-llm-nebula-refresh.service"]
    starts = [line.split("=", 1)[1] for line in refresh.splitlines() if line.startswith("ExecStart=")]
    at_start = files[f"{units}/hybrid-llm-nebula-config.service"].split("ExecStart=")[1].strip()
    assert starts == [at_start, "/bin/systemctl reload nebula.service"]
    assert "ExecReload=/bin/kill -HUP $MAINPID" in files[f"{units}/nebula.service"]
    assert "OnCalendar=daily" in files[f"{units}/hybrid-llm-nebula-refresh.timer"]
    enabled = [line for line in boot.splitlines() if line.startswith("systemctl enable ")]
    assert enabled and "hybrid-llm-nebula-refresh.timer" in enabled[0].split()


def test_the_latest_deep_learning_ami_is_held_unless_pinned(dev_plan, run_program):
    (template,) = dev_plan.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    assert template.ignore_changes == ("imageId",), "a new DLAMI release must not replace the worker"
    pinned = run_program({"hybrid-llm:gpuAmiId": "ami-0123456789abcdef0"})
    (template,) = pinned.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    assert template.ignore_changes == ()
    assert template.plain()["imageId"] == "ami-0123456789abcdef0"
