"""The homelab side under Pulumi mocks, with a homelab API server on loopback:
what is declared, pinned and labelled; that keys stay in Secrets; the peering's
credential and resources; Ollama's values; and nothing without a kubeconfig.
Liqo resources are validated against the real CRDs, values against the charts'
real values.yaml (../shared/upstream)."""

from __future__ import annotations

import base64
import copy

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components import liqo_manifests, versions
from components.config import ConfigError
from components.homelab import ollama
from components.mesh import snat
from tests import upstream
from tests.homelab.conftest import RANGES, kubeconfig
from tools import harness

KUBERNETES_VERSION = "1.34"
RELEASE = "kubernetes:helm.sh/v3:Release"
NAMESPACE = "kubernetes:core/v1:Namespace"
WORKER_ID = "hybrid-llm-dev-gpu-0"


def by_name(plan, type_token, name):
    found = [r for r in plan.of_type(type_token) if (r.plain().get("metadata") or {}).get("name") == name
             or r.plain().get("name") == name]
    assert len(found) == 1, (type_token, name, [r.name for r in plan.of_type(type_token)])
    return found[0]


def release(plan, name):
    return by_name(plan, RELEASE, name).plain()


def manifests(plan):
    return dict(plan.kubernetes_documents(show_secrets=True))


# --- without a kubeconfig ---------------------------------------------------------------


def test_nothing_homelab_side_without_a_kubeconfig(dev_plan):
    assert not [r for r in dev_plan.resources if r.type.startswith("kubernetes:")]
    assert not [r for r in dev_plan.resources if r.type.startswith("hybrid-llm:index:") and "Homelab" in r.type]
    assert "hybrid-llm:homelabKubeconfig" in dev_plan.outputs["homelab"].value


def test_adding_the_homelab_later_changes_no_worker(dev_plan, homelab_plan):
    """The worker's user data (so its launch template) is the same with or without
    the homelab: setting the kubeconfig never replaces a worker."""
    template = "aws:ec2/launchTemplate:LaunchTemplate"
    assert dev_plan.of_type(template)[0].plain()["userData"] == homelab_plan.of_type(template)[0].plain()["userData"]


# --- the kubeconfig --------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("not: [yaml", "not valid YAML"),
    ("apiVersion: v1\nkind: Config\n", "no current-context"),
    ("current-context: x\ncontexts: []\n", "'x' is not among its contexts"),
    ("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\nclusters: [{name: c, cluster: {}}]\n",
     "has no server"),
    ("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
     "clusters: [{name: c, cluster: {server: 'http://10.0.0.1:6443'}}]\n", "https URL"),
])
def test_a_wrong_kubeconfig_is_one_line_naming_the_key(text, expected):
    with pytest.raises(ConfigError) as info:
        harness.run_stack("dev", {"hybrid-llm:homelabKubeconfig": text, **RANGES})
    message = str(info.value)
    assert message.startswith("hybrid-llm:homelabKubeconfig:") and expected in message and "\n" not in message


def _closed_port() -> int:
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_an_unreachable_homelab_fails_up_naming_the_key():
    with pytest.raises(ConfigError) as info:
        harness.run_stack("dev", {"hybrid-llm:homelabKubeconfig": kubeconfig(_closed_port()), **RANGES})
    assert str(info.value).startswith("hybrid-llm:homelabKubeconfig: the homelab API server 127.0.0.1:")


def test_an_unreachable_homelab_only_warns_in_a_preview():
    """Pull-request previews run where the homelab is rarely reachable."""
    plan = harness.run_stack("dev", {"hybrid-llm:homelabKubeconfig": kubeconfig(_closed_port()), **RANGES},
                             preview=True)
    assert plan.of_type("pulumi:providers:kubernetes")


def test_the_provider_uses_only_the_kubeconfig_as_a_secret(homelab_plan, homelab_overrides):
    provider = homelab_plan.of_type("pulumi:providers:kubernetes")[0]
    assert harness.rpc.is_rpc_secret(provider.inputs["kubeconfig"])
    assert provider.plain()["kubeconfig"] == homelab_overrides["hybrid-llm:homelabKubeconfig"]


# --- versions, pinned in one place and real ------------------------------------------------


def test_releases_are_pinned_from_versions(homelab_plan):
    for release_name, chart in (("liqo", versions.LIQO_CHART), (ollama.RELEASE, versions.OLLAMA_CHART)):
        values = release(homelab_plan, release_name)
        assert (values["chart"], values["version"], values["repositoryOpts"]["repo"]) == \
            (chart.name, chart.version, chart.repo)
    assert versions.LIQO_CHART.version == "v1.2.0"
    assert upstream.LIQO.name.endswith(versions.LIQO_CHART.version)
    assert upstream.OLLAMA.name.endswith(versions.OLLAMA_CHART.version)
    assert yaml.safe_load((upstream.OLLAMA / "Chart.yaml").read_text())["version"] == versions.OLLAMA_CHART.version


def test_the_worker_runs_the_same_liqo(homelab_plan):
    chart = yaml.safe_load(homelab_plan.file("workers/gpu-0/manifests/liqo.yaml").content)
    assert (chart["spec"]["chart"], chart["spec"]["version"], chart["spec"]["repo"]) == \
        (versions.LIQO_CHART.name, versions.LIQO_CHART.version, versions.LIQO_CHART.repo)


def test_the_nebula_image_is_the_release_the_aws_hosts_install(homelab_plan):
    images = {c["image"] for r in homelab_plan.of_type("kubernetes:apps/v1:DaemonSet")
              for c in r.plain()["spec"]["template"]["spec"]["containers"]}
    assert images == {versions.NEBULA_IMAGE}
    assert versions.NEBULA_IMAGE.endswith(":" + versions.NEBULA.version.removeprefix("v"))
    for r in homelab_plan.of_type("kubernetes:apps/v1:DaemonSet"):
        for c in r.plain()["spec"]["template"]["spec"]["initContainers"]:
            assert c["image"] == versions.IPTABLES_IMAGE and ":latest" not in c["image"]


def test_every_values_key_exists_in_the_charts(homelab_plan):
    liqo_values = release(homelab_plan, "liqo")["values"]
    assert upstream.unknown_keys(liqo_values, upstream.chart_values("liqo")) == []
    ollama_values = release(homelab_plan, ollama.RELEASE)["values"]
    assert upstream.unknown_keys(ollama_values, upstream.chart_values("ollama")) == []
    worker = yaml.safe_load(yaml.safe_load(homelab_plan.file("workers/gpu-0/manifests/liqo.yaml").content)
                            ["spec"]["valuesContent"])
    assert upstream.unknown_keys(worker, upstream.chart_values("liqo")) == []


def test_the_values_check_catches_a_misspelt_key():
    assert upstream.unknown_keys({"networking": {"enable": False}}, upstream.chart_values("liqo")) == \
        ["networking.enable"]
    assert upstream.unknown_keys({"ollama": {"gpus": {}}}, upstream.chart_values("ollama")) == ["ollama.gpus"]


def test_liqo_values_on_both_sides(homelab_plan):
    home = release(homelab_plan, "liqo")["values"]
    worker = yaml.safe_load(yaml.safe_load(homelab_plan.file("workers/gpu-0/manifests/liqo.yaml").content)
                            ["spec"]["valuesContent"])
    assert home["discovery"]["config"]["clusterID"] == "homelab"
    assert worker["discovery"]["config"]["clusterID"] == WORKER_ID
    for values in (home, worker):
        assert values["networking"] == {"enabled": False, "reflectIPs": True}
        assert values["telemetry"] == {"enabled": False}
    assert home["ipam"] == {"podCIDRs": [RANGES["hybrid-llm:homelabPodCidr"]],
                            "serviceCIDR": RANGES["hybrid-llm:homelabServiceCidr"]}
    worker_ip = homelab_plan.outputs["workerNebulaIps"].value["gpu-0"]
    assert worker["apiServer"]["address"] == f"https://{worker_ip}:6443"
    assert worker["storage"]["realStorageClassName"] == liqo_manifests.MODELS_STORAGE_CLASS
    k3s = homelab_plan.file("workers/gpu-0/boot.sh").content
    assert f"--cluster-cidr={worker['ipam']['podCIDRs'][0]}" in k3s
    assert f"--service-cidr={worker['ipam']['serviceCIDR']}" in k3s


# --- namespaces, Nebula DaemonSets, keys ---------------------------------------------------


def test_namespaces_and_their_labels(homelab_plan):
    privileged = {"pod-security.kubernetes.io/enforce": "privileged"}
    for name in ("nebula", "liqo", liqo_manifests.tenant_namespace(WORKER_ID)):
        labels = by_name(homelab_plan, NAMESPACE, name).plain()["metadata"]["labels"]
        assert privileged.items() <= labels.items(), name
    tenant = by_name(homelab_plan, NAMESPACE, liqo_manifests.tenant_namespace(WORKER_ID)).plain()["metadata"]["labels"]
    assert tenant["liqo.io/remote-cluster-id"] == WORKER_ID and tenant["liqo.io/tenant-namespace"] == "true"
    offloaded = by_name(homelab_plan, NAMESPACE, ollama.NAMESPACE).plain()["metadata"]["labels"]
    assert "pod-security.kubernetes.io/enforce" not in offloaded, "Ollama needs no privilege"


def test_one_nebula_daemon_set_per_node_with_its_own_key(homelab_plan):
    nodes = ["talos-cp-1", "talos-worker-1"]
    sets = {r.plain()["metadata"]["name"]: r.plain() for r in homelab_plan.of_type("kubernetes:apps/v1:DaemonSet")}
    assert set(sets) == {f"nebula-{n}" for n in nodes}
    secrets = {r.plain()["metadata"]["name"]: r for r in homelab_plan.of_type("kubernetes:core/v1:Secret")
               if r.plain()["metadata"]["namespace"] == "nebula"}
    keys = set()
    for node in nodes:
        pod = sets[f"nebula-{node}"]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"kubernetes.io/hostname": node}
        projected = next(v for v in pod["volumes"] if v["name"] == "pki")["projected"]["sources"]
        assert next(s["secret"]["name"] for s in projected if "secret" in s) == f"nebula-{node}"
        secret = secrets[f"nebula-{node}"]
        string_data = secret.inputs["stringData"]
        assert harness.rpc.is_rpc_secret(string_data) or harness.rpc.is_rpc_secret(string_data["host.key"])
        keys.add(secret.plain()["stringData"]["host.key"])
        cert = secret.plain()["stringData"]["host.crt"]
        assert cert == homelab_plan.file(f"nebula/{node}/host.crt").content
    assert len(keys) == 2 and all("NEBULA X25519 PRIVATE KEY" in k for k in keys)


def test_the_node_label_is_overridable(homelab_overrides):
    plan = harness.run_stack("dev", {**homelab_overrides, "hybrid-llm:homelabNodeLabel": "homelab.example/name"})
    for r in plan.of_type("kubernetes:apps/v1:DaemonSet"):
        assert list(r.plain()["spec"]["template"]["spec"]["nodeSelector"]) == ["homelab.example/name"]


def test_nebula_pods_have_net_admin_and_tun_and_nothing_more(homelab_plan):
    for r in homelab_plan.of_type("kubernetes:apps/v1:DaemonSet"):
        pod = r.plain()["spec"]["template"]["spec"]
        assert pod["hostNetwork"] is True
        for container in pod["containers"] + pod["initContainers"]:
            context = container["securityContext"]
            assert context["capabilities"] == {"add": ["NET_ADMIN"], "drop": ["ALL"]}
            assert context["privileged"] is False and context["allowPrivilegeEscalation"] is False
        host_paths = [v["hostPath"] for v in pod["volumes"] if "hostPath" in v]
        assert host_paths == [{"path": "/dev/net/tun", "type": "CharDevice"}]
        assert pod["automountServiceAccountToken"] is False


def test_the_snat_init_container_names_the_nft_backend_on_a_read_only_root(homelab_plan):
    """Kubernetes' maintained iptables image, the script from the shared ConfigMap,
    which calls iptables-nft by name (tests/mesh/test_snat.py runs it on a read-only
    root): no IPTABLES override, no host xtables lock, nothing else mounted."""
    script = by_name(homelab_plan, "kubernetes:core/v1:ConfigMap", "nebula-config").plain()["data"]["snat.sh"]
    assert f'IPTABLES="${{IPTABLES:-{snat.IPTABLES}}}"' in script
    assert versions.IPTABLES_IMAGE.startswith("registry.k8s.io/build-image/distroless-iptables:v")
    for r in homelab_plan.of_type("kubernetes:apps/v1:DaemonSet"):
        (init,) = r.plain()["spec"]["template"]["spec"]["initContainers"]
        assert init["image"] == versions.IPTABLES_IMAGE
        assert init["command"] == ["/bin/sh", "/snat/snat.sh"]
        assert "IPTABLES" not in {e["name"] for e in init.get("env", [])}
        assert init["securityContext"]["readOnlyRootFilesystem"] is True
        assert [(m["mountPath"], m.get("readOnly")) for m in init["volumeMounts"]] == [("/snat", True)]


def test_no_private_key_in_a_config_map(homelab_plan):
    maps = homelab_plan.of_type("kubernetes:core/v1:ConfigMap")
    assert len(maps) >= 2
    for r in maps:
        for key, value in r.plain()["data"].items():
            assert "PRIVATE KEY" not in value, (r.name, key)
    config = by_name(homelab_plan, "kubernetes:core/v1:ConfigMap", "nebula-config").plain()["data"]["config.yml"]
    assert config == homelab_plan.file("nebula/talos-cp-1/config.yml").content


def test_core_manifests_pass_the_kubernetes_schema(homelab_plan):
    checked = 0
    for path, document in manifests(homelab_plan).items():
        if path.startswith("homelab/releases/"):
            continue
        if upstream.is_liqo(document):
            upstream.validate_liqo(document)
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 10


# --- the peering ------------------------------------------------------------------------


def test_identity_kubeconfig_reaches_the_worker_with_a_certificate_its_client_ca_signed(homelab_plan):
    secret = by_name(homelab_plan, "kubernetes:core/v1:Secret", f"kubeconfig-controlplane-{WORKER_ID}").plain()
    meta = secret["metadata"]
    assert meta["namespace"] == liqo_manifests.tenant_namespace(WORKER_ID)
    assert meta["labels"] == {"liqo.io/identity-type": "ControlPlane", "liqo.io/remote-cluster-id": WORKER_ID}
    assert meta["annotations"] == {"liqo.io/remote-tenant-namespace": "liqo-tenant-homelab"}
    config = yaml.safe_load(secret["stringData"]["kubeconfig"])
    worker_ip = homelab_plan.outputs["workerNebulaIps"].value["gpu-0"]
    assert config["clusters"][0]["cluster"]["server"] == f"https://{worker_ip}:6443"
    cert = x509.load_pem_x509_certificate(base64.b64decode(config["users"][0]["user"]["client-certificate-data"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "homelab"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == liqo_manifests.CONSUMER_ORGANIZATION
    client_ca = next(r for r in homelab_plan.of_type("tls:index/selfSignedCert:SelfSignedCert")
                     if r.name.endswith("gpu-0-pki-client-ca"))
    ca = x509.load_pem_x509_certificate(client_ca.state["certPem"].encode())
    assert cert.issuer == ca.subject
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    server_ca = next(r for r in homelab_plan.of_type("tls:index/selfSignedCert:SelfSignedCert")
                     if r.name.endswith("gpu-0-pki-server-ca"))
    assert base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]).decode() == \
        server_ca.state["certPem"]


def test_the_providers_tenant_binds_that_certificates_user(homelab_plan):
    documents = list(yaml.safe_load_all(homelab_plan.file("workers/gpu-0/manifests/liqo-tenant.yaml").content))
    kinds = {d["kind"]: d for d in documents}
    assert kinds["Namespace"]["metadata"]["name"] == "liqo-tenant-homelab"
    assert kinds["Tenant"]["spec"]["authzPolicy"] == "TolerateNoHandshake"
    assert kinds["RoleBinding"]["roleRef"]["name"] == liqo_manifests.CONTROL_PLANE_ROLE
    assert kinds["RoleBinding"]["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                                "name": "homelab"}]
    for document in documents:
        if upstream.is_liqo(document):
            upstream.validate_liqo(document)


def test_resource_slice_asks_for_the_workers_gpu_and_waits_for_liqo(homelab_plan):
    slice_ = by_name(homelab_plan, "kubernetes:authentication.liqo.io/v1beta1:ResourceSlice", WORKER_ID)
    body = slice_.plain()
    upstream.validate_liqo(body)
    assert body["metadata"]["annotations"] == {"liqo.io/create-virtual-node": "true"}
    # g4dn.xlarge: 4 vCPUs, 16 GiB, 1 GPU, less the system's reserve.
    assert body["spec"]["resources"] == {"cpu": "3500m", "memory": "14336Mi", "nvidia.com/gpu": "1", "pods": "110"}
    secret = by_name(homelab_plan, "kubernetes:core/v1:Secret", f"kubeconfig-controlplane-{WORKER_ID}")
    liqo_release = by_name(homelab_plan, RELEASE, "liqo")
    assert secret.urn in slice_.dependencies and liqo_release.urn in slice_.dependencies


def test_a_broken_liqo_resource_fails_the_crd_schema(homelab_plan):
    body = copy.deepcopy(by_name(homelab_plan, "kubernetes:offloading.liqo.io/v1beta1:NamespaceOffloading",
                                 "offloading").plain())
    body["spec"]["podOffloadingStrategy"] = "Everywhere"
    with pytest.raises(jsonschema.ValidationError):
        upstream.validate_liqo(body)
    with pytest.raises(KeyError):
        upstream.validate_liqo({"apiVersion": "core.liqo.io/v1beta1", "kind": "Peering"})


# --- offloading and Ollama -------------------------------------------------------------------


def test_namespace_offloading_exists_before_any_pod(homelab_plan):
    offloading = by_name(homelab_plan, "kubernetes:offloading.liqo.io/v1beta1:NamespaceOffloading", "offloading")
    body = offloading.plain()
    assert body["metadata"]["namespace"] == ollama.NAMESPACE
    assert body["spec"]["podOffloadingStrategy"] == "Remote"
    terms = body["spec"]["clusterSelector"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "liqo.io/remote-cluster-id", "operator": "In",
                                            "values": [WORKER_ID]}]}]
    chart = by_name(homelab_plan, RELEASE, ollama.RELEASE)
    assert offloading.urn in chart.dependencies


def test_ollama_values(homelab_plan):
    values = release(homelab_plan, ollama.RELEASE)["values"]
    assert values["ollama"]["gpu"] == {"enabled": True, "type": "nvidia", "number": 1}
    assert values["ollama"]["models"]["pull"] == ["llama3.2:3b"]
    # Loaded until the worker stops: a loaded model is not work, so this never delays a stop.
    keep_alive = next(e["value"] for e in values["extraEnv"] if e["name"] == "OLLAMA_KEEP_ALIVE")
    assert int(keep_alive) < 0
    assert values["persistentVolume"]["enabled"] is True and values["persistentVolume"]["storageClass"] == "liqo"
    assert "volumeName" not in values["persistentVolume"], "Liqo skips a claim that names its volume"
    assert values["nodeSelector"] == {"liqo.io/remote-cluster-id": WORKER_ID}
    assert values["fullnameOverride"] == ollama.RELEASE != ollama.SERVICE


def test_ollama_tolerates_a_stopped_worker_forever(homelab_plan):
    tolerations = release(homelab_plan, ollama.RELEASE)["values"]["tolerations"]
    keys = {t["key"]: t for t in tolerations}
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", liqo_manifests.VIRTUAL_NODE_TAINT):
        assert keys[key]["effect"] == "NoExecute" and keys[key]["operator"] == "Exists"
        assert "tolerationSeconds" not in keys[key], f"{key}: a time limit would evict Ollama from a stopped worker"


def test_the_worker_volume_is_kept_for_ollamas_claim(homelab_plan):
    documents = list(yaml.safe_load_all(homelab_plan.file("workers/gpu-0/manifests/ollama-models-pv.yaml").content))
    pv = next(d for d in documents if d["kind"] == "PersistentVolume")
    storage_class = next(d for d in documents if d["kind"] == "StorageClass")
    assert storage_class["metadata"]["name"] == pv["spec"]["storageClassName"] == liqo_manifests.MODELS_STORAGE_CLASS
    assert pv["spec"]["claimRef"] == {"namespace": ollama.NAMESPACE, "name": ollama.RELEASE}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"


def test_homelab_clients_reach_ollama_by_the_service_name(homelab_plan):
    """`ollama.llm-inference` names the activator (which holds requests while the
    worker starts); the chart's own Service is `ollama-backend`, its backend."""
    service = by_name(homelab_plan, "kubernetes:core/v1:Service", ollama.SERVICE).plain()
    assert service["metadata"]["namespace"] == ollama.NAMESPACE
    activator = by_name(homelab_plan, "kubernetes:core/v1:Service", "activator").plain()
    assert service["spec"] == {"type": "ExternalName", "externalName":
                               f"activator.{activator['metadata']['namespace']}.svc.cluster.local",
                               "ports": [{"name": "http", "port": 11434}]}
    assert activator["spec"]["ports"][0]["port"] == 11434
    assert homelab_plan.outputs["homelab"].value["ollamaUrl"] == "http://ollama.llm-inference.svc.cluster.local:11434"


def test_two_workers_peer_both_and_ollama_stays_on_the_first(homelab_overrides):
    plan = harness.run_stack("dev", {**homelab_overrides, "hybrid-llm:gpuWorkers": "2"})
    slices = plan.of_type("kubernetes:authentication.liqo.io/v1beta1:ResourceSlice")
    assert sorted(r.plain()["metadata"]["name"] for r in slices) == [WORKER_ID, "hybrid-llm-dev-gpu-1"]
    offloading = plan.of_type("kubernetes:offloading.liqo.io/v1beta1:NamespaceOffloading")[0].plain()
    assert offloading["spec"]["clusterSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == \
        [WORKER_ID, "hybrid-llm-dev-gpu-1"]
    assert release(plan, ollama.RELEASE)["values"]["nodeSelector"] == {"liqo.io/remote-cluster-id": WORKER_ID}


def test_plan_render_writes_every_homelab_manifest_and_values_file(tmp_path, homelab_overrides, homelab_plan):
    import subprocess
    import sys

    from tests.conftest import ROOT

    sets = [a for key, value in homelab_overrides.items() for a in ("--set", f"{key}={value}")]
    out = tmp_path / "render"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "plan.py"), *sets, "--render", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    expected = {path for path, _ in homelab_plan.kubernetes_documents()}
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "homelab/" in str(p)}
    assert expected and expected == written
    assert (out / "homelab/releases/ollama-backend.values.yaml").exists()
    assert (out / "homelab/releases/liqo.values.yaml").exists()
    for path in out.rglob("homelab/manifests/*secret*.yaml"):
        assert "PRIVATE KEY" not in path.read_text(), "secrets are redacted without --show-secrets"
