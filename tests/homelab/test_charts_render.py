"""The three charts rendered by Helm's own template engine with the values the
program computed, and what they render validated: core kinds against the
Kubernetes 1.34 schemas (kubernetes-validate, strict), Liqo's kinds against
Liqo v1.2.0's real CRDs. The key checks in test_homelab.py catch a misspelt key;
this catches a value of the wrong type, a missing required value, a template
that fails, and an object the API server would refuse.

- The charts are the pinned releases in ../shared/upstream (no repository, no
  cluster). Liqo's tag holds the chart at version 0.1.0 with no appVersion; its
  release job runs `helm package deployments/liqo --version <tag> --app-version
  <tag>` (liqotech/liqo .github/workflows/integration.yml, job `release`), and so
  does the fixture below before rendering.
- The values are the program's own, from `__main__.py` under mocks: the homelab's
  Liqo and Ollama `Release` values as Pulumi passes them (numbers as floats), and
  the worker's k3s HelmChart manifests (`valuesContent`, none for the device
  plugin: its defaults), each with the release name and namespace it gets.
- The engine is Helm v4's (helm-python-sdk bundles libhelm_c, Helm's Go SDK):
  `Chart.render` is `engine.Render` with Helm's default capabilities (no
  `--kube-version`), `lookup` answering empty, subchart conditions applied.
  Pulumi's `Release` and k3s's helm-controller run Helm v3 against a live API
  server; `test_the_engines_defaults_change_nothing_here` checks that the two
  differences that could change a render (kube version, lookup) do not for these
  charts.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components import versions
from components.aws.gpu_worker import GPU_PRESENT_LABEL
from components.homelab import ollama
from components.mesh.nebula_config import OLLAMA_PORT
from tests import upstream
from tests.conftest import unavailable

KUBERNETES_VERSION = "1.34"        # k3s v1.34 on the workers (components/versions.py)
RELEASE = "kubernetes:helm.sh/v3:Release"
WORKER_MANIFESTS = "workers/gpu-0/manifests"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # 3 MB of CRDs: libyaml when there
CHART_DIRS = {"liqo": upstream.LIQO / "chart", "ollama": upstream.OLLAMA / "chart",
              "nvidia-device-plugin": upstream.DEVICE_PLUGIN / "chart"}


def _engine():
    """helm_python (Helm v4's engine). Missing: a failure under CI=true, a skip elsewhere."""
    try:
        import helm_python
    except ImportError as err:  # pragma: no cover - depends on the environment
        unavailable(f"helm-python-sdk is not installed ({err}); `make deps` installs it from requirements-dev.txt")
    return helm_python


@dataclass(frozen=True)
class Release:
    """One chart as the program installs it."""

    key: str
    chart: str                # key of CHART_DIRS
    name: str
    namespace: str
    values: dict[str, Any]


@pytest.fixture(scope="module")
def helm():
    return _engine()


@pytest.fixture(scope="module")
def releases(homelab_plan) -> dict[str, Release]:
    """The program's four chart installs: the homelab's two Pulumi Releases and the
    first worker's two k3s HelmCharts."""
    found = {}
    for resource in homelab_plan.of_type(RELEASE):
        body = resource.plain()
        key = {"liqo": "liqo-homelab", ollama.RELEASE: "ollama"}[body["name"]]
        found[key] = Release(key, body["chart"], body["name"], body["namespace"], body["values"])
    for file_name, key in (("liqo.yaml", "liqo-worker"), ("nvidia-device-plugin.yaml", "nvidia-device-plugin")):
        chart = yaml.safe_load(homelab_plan.file(f"{WORKER_MANIFESTS}/{file_name}").content)
        assert chart["kind"] == "HelmChart", file_name
        found[key] = Release(key, chart["spec"]["chart"], chart["metadata"]["name"], chart["spec"]["targetNamespace"],
                             yaml.safe_load(chart["spec"].get("valuesContent") or "{}") or {})
    assert set(found) == {"liqo-homelab", "ollama", "liqo-worker", "nvidia-device-plugin"}
    return found


@pytest.fixture(scope="module")
def chart_paths(helm, tmp_path_factory) -> dict[str, Path]:
    """Each chart as its repository serves it: Liqo packaged as its release job does."""
    liqo_version = versions.LIQO_CHART.version
    packaged = helm.package(CHART_DIRS["liqo"], destination=tmp_path_factory.mktemp("liqo-chart"),
                            version=liqo_version, app_version=liqo_version)
    return {"liqo": Path(packaged), "ollama": CHART_DIRS["ollama"],
            "nvidia-device-plugin": CHART_DIRS["nvidia-device-plugin"]}


def render(helm, path: Path, release: Release, values: dict[str, Any]) -> list[tuple[str, dict]]:
    """(template path, object) for every object the chart renders; a template that
    fails raises helm_python.HelmRenderError, output that is not YAML yaml.YAMLError."""
    with helm.Chart.load(path) as chart:
        manifests = chart.render(values, name=release.name, namespace=release.namespace, is_install=True)
    documents = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        documents += [(template, d) for d in yaml.safe_load_all(text) if d is not None]
    return documents


def validate(documents: list[tuple[str, dict]]) -> Counter:
    """Raise on the first object the API server would refuse; return the kinds' counts."""
    kinds: Counter = Counter()
    for template, document in documents:
        assert isinstance(document, dict) and document.get("kind"), (template, document)
        if upstream.is_liqo(document):
            upstream.validate_liqo(upstream.with_crd_defaults(document))
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        kinds[document["kind"]] += 1
    return kinds


@pytest.fixture(scope="module")
def rendered(helm, releases, chart_paths) -> dict[str, list[tuple[str, dict]]]:
    """Each release rendered once for the module."""
    return {key: render(helm, chart_paths[r.chart], r, r.values) for key, r in releases.items()}


def objects(documents, kind: str) -> list[dict]:
    return [d for _, d in documents if d["kind"] == kind]


def pod_specs(documents) -> list[dict]:
    return [d["spec"]["template"]["spec"] for _, d in documents
            if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job")]


# --- the charts are the pinned ones ------------------------------------------------------


def test_the_charts_rendered_are_the_pinned_releases(helm, releases, chart_paths):
    pins = {"liqo": versions.LIQO_CHART, "ollama": versions.OLLAMA_CHART,
            "nvidia-device-plugin": versions.DEVICE_PLUGIN_CHART}
    for chart, pin in pins.items():
        with helm.Chart.load(chart_paths[chart]) as loaded:
            assert (loaded.name, loaded.version) == (pin.name, pin.version), chart
    assert {r.chart for r in releases.values()} == set(pins)
    assert helm.helm_sdk_version().startswith("v4.")


# --- everything rendered is valid --------------------------------------------------------

EXPECTED_KINDS = {
    "liqo-homelab": {"Deployment": 5, "ConfigMap": 1, "Network": 4, "FirewallConfiguration": 1,
                     "VkOptionsTemplate": 1, "StorageClass": 1, "Job": 1},
    "liqo-worker": {"Deployment": 5, "ConfigMap": 1, "Network": 4, "FirewallConfiguration": 1,
                    "VkOptionsTemplate": 1, "StorageClass": 1, "Job": 1},
    "ollama": {"Deployment": 1, "Service": 1, "ServiceAccount": 1, "PersistentVolumeClaim": 1},
    "nvidia-device-plugin": {"DaemonSet": 2},
}


@pytest.mark.parametrize("key", sorted(EXPECTED_KINDS))
def test_every_object_rendered_with_the_programs_values_is_valid(rendered, key):
    kinds = validate(rendered[key])
    for kind, count in EXPECTED_KINDS[key].items():
        assert kinds[kind] == count, (key, kind, dict(kinds))
    for spec in pod_specs(rendered[key]):
        for container in spec.get("initContainers", []) + spec["containers"]:
            names = [e["name"] for e in container.get("env") or []]
            assert len(names) == len(set(names)), f"{key}: {container['name']} sets an env var twice"


def test_liqos_crds_are_the_ones_its_kinds_are_validated_against(helm, chart_paths):
    """The packaged chart's CRDs (installed from `crds/` before the templates) are,
    object for object, the ones in ../shared/upstream/liqo-v1.2.0/crds."""
    def by_kind(documents):
        return {(d["spec"]["group"], d["spec"]["names"]["kind"]): d for d in documents}

    with helm.Chart.load(chart_paths["liqo"]) as chart:
        in_chart = by_kind(yaml.load(c["data"], Loader=_LOADER) for c in chart.crds)
    shared = by_kind(yaml.load(p.read_text(), Loader=_LOADER) for p in (upstream.LIQO / "crds").glob("*.yaml"))
    assert in_chart == shared and len(in_chart) >= 20


def test_liqos_chart_relies_on_the_api_servers_defaulting(rendered):
    """Liqo's chart leaves out its FirewallConfiguration rule's `counter`, which the
    CRD requires and defaults: valid only once defaulted, as the API server does."""
    [firewall] = objects(rendered["liqo-homelab"], "FirewallConfiguration")
    with pytest.raises(jsonschema.ValidationError, match="'counter' is a required property"):
        upstream.validate_liqo(firewall)
    defaulted = upstream.with_crd_defaults(firewall)
    upstream.validate_liqo(defaulted)
    rule = defaulted["spec"]["table"]["chains"][0]["rules"]["filterRules"][0]
    assert rule["counter"] is True
    assert "counter" not in firewall["spec"]["table"]["chains"][0]["rules"]["filterRules"][0], "a copy"


# --- what the values mean reaches the objects ----------------------------------------------


def test_ollama_renders_what_the_program_asked_for(rendered, releases, homelab_plan):
    documents, values = rendered["ollama"], releases["ollama"].values
    [deployment] = objects(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"].endswith(f":{versions.OLLAMA_APP_VERSION}")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "OLLAMA_KEEP_ALIVE", "value": ollama.KEEP_ALIVE} in container["env"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    for toleration in values["tolerations"]:
        assert toleration in pod["tolerations"]
    pull = container["lifecycle"]["postStart"]["exec"]["command"][-1]
    for model in values["ollama"]["models"]["pull"]:
        assert f"ollama pull  {model}" in pull or f"ollama pull {model}" in pull
    [service] = objects(documents, "Service")
    assert service["metadata"]["name"] == ollama.RELEASE
    assert service["spec"]["ports"][0]["port"] == OLLAMA_PORT
    # The chart's claim is the one the worker's volume is reserved for.
    [claim] = objects(documents, "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == values["persistentVolume"]["storageClass"] == "liqo"
    pv = next(d for d in yaml.safe_load_all(homelab_plan.file(f"{WORKER_MANIFESTS}/ollama-models-pv.yaml").content)
              if d["kind"] == "PersistentVolume")
    assert pv["spec"]["claimRef"] == {"namespace": claim["metadata"]["namespace"], "name": claim["metadata"]["name"]}
    assert claim["spec"]["resources"]["requests"]["storage"] == pv["spec"]["capacity"]["storage"]
    assert set(claim["spec"]["accessModes"]) <= set(pv["spec"]["accessModes"])


@pytest.mark.parametrize("key", ["liqo-homelab", "liqo-worker"])
def test_liqo_renders_the_cluster_id_cidrs_and_release_images(rendered, releases, key):
    documents, values = rendered[key], releases[key].values
    config = next(d for d in objects(documents, "ConfigMap") if d["metadata"]["name"] == "liqo-clusterid-configmap")
    assert config["data"]["CLUSTER_ID"] == values["discovery"]["config"]["clusterID"]
    cidrs = {n["spec"]["cidr"] for n in objects(documents, "Network")}
    assert set(values["ipam"]["podCIDRs"]) | {values["ipam"]["serviceCIDR"]} <= cidrs
    images = {c["image"] for spec in pod_specs(documents) for c in spec.get("initContainers", []) + spec["containers"]}
    assert images and all(i.endswith(f":{versions.LIQO_CHART.version}") for i in images), images
    # The virtual class Ollama's claim names is the one Liqo creates.
    classes = [s["metadata"]["name"] for s in objects(documents, "StorageClass")]
    assert classes == [releases["ollama"].values["persistentVolume"]["storageClass"]]


def _matches(expression: dict, labels: dict[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    if operator == "In":
        return labels.get(key) in expression["values"]
    if operator == "NotIn":
        return labels.get(key) not in expression["values"]
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise AssertionError(f"operator {operator} not handled here")


def schedules_on(pod: dict, labels: dict[str, str]) -> bool:
    """Whether a node with these labels satisfies the pod's nodeSelector and required node affinity."""
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    required = ((pod.get("affinity") or {}).get("nodeAffinity") or {}) \
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    return any(all(_matches(e, labels) for e in term.get("matchExpressions", []))
               for term in required["nodeSelectorTerms"])


def test_the_device_plugin_and_only_it_schedules_on_the_worker(rendered):
    """The worker's k3s labels its node nvidia.com/gpu.present=true (no NFD): the
    chart's default affinity accepts that, and the MPS daemon stays off."""
    worker = {GPU_PRESENT_LABEL[0]: GPU_PRESENT_LABEL[1], "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": "gpu-0"}
    sets = {d["metadata"]["name"]: d["spec"]["template"]["spec"]
            for d in objects(rendered["nvidia-device-plugin"], "DaemonSet")}
    running = {name for name, pod in sets.items() if schedules_on(pod, worker)}
    assert running == {"nvidia-device-plugin"}
    unlabelled = {k: v for k, v in worker.items() if k != GPU_PRESENT_LABEL[0]}
    assert not schedules_on(sets["nvidia-device-plugin"], unlabelled)
    [image] = {c["image"] for c in sets["nvidia-device-plugin"]["containers"]}
    assert image.endswith(f":v{versions.DEVICE_PLUGIN_CHART.version}")


# --- a wrong value fails here ------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(values: dict) -> None:
        *parents, last = path.split(".")
        target = values
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return mutate


BROKEN = [
    # key, values path, a value of the wrong type, what catches it
    ("ollama", "nodeSelector", "liqo.io/remote-cluster-id=hybrid-llm-dev-gpu-0", "schema"),
    ("ollama", "ollama.models.pull", "llama3.2:3b", "render"),
    ("liqo-homelab", "ipam.podCIDRs", "10.244.0.0/16", "render"),
    ("liqo-worker", "apiServer", "https://10.42.2.1:6443", "render"),
    ("nvidia-device-plugin", "affinity", "nvidia.com/gpu.present", "schema"),
]


@pytest.mark.parametrize("key,path,wrong,caught_by", BROKEN, ids=[f"{b[0]}:{b[1]}" for b in BROKEN])
def test_a_value_of_the_wrong_type_fails(helm, releases, chart_paths, key, path, wrong, caught_by):
    release = releases[key]
    values = copy.deepcopy(release.values)
    _set(path, wrong)(values)
    if caught_by == "render":
        with pytest.raises(helm.HelmRenderError):
            render(helm, chart_paths[release.chart], release, values)
    else:
        documents = render(helm, chart_paths[release.chart], release, values)
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(documents)


def test_unchanged_values_render_again_the_same(helm, releases, chart_paths, rendered):
    """The broken renders start from the program's values, and those alone pass."""
    release = releases["ollama"]
    again = render(helm, chart_paths[release.chart], release, copy.deepcopy(release.values))
    assert again == rendered["ollama"]


# --- where Helm v4's offline render could differ from Helm v3 on a cluster ---------------------

_SEMVER_ON_KUBE = re.compile(r'semverCompare\s+"([^"]+)"\s+\$?\.Capabilities\.KubeVersion\.(?:GitVersion|Version)')
_LOOKUP = re.compile(r"\blookup\s+\"")


def _satisfies(constraint: str, version: tuple[int, int, int]) -> bool:
    """Masterminds/semver constraints of the forms these charts use (`>=1.19-0`,
    `>= 1.10.0-0`, `^1.16.0-0`, comma-joined); any other form fails the test."""
    assert "||" not in constraint and not re.search(r"[*xX]", constraint), constraint
    result = True
    for part in re.split(r"\s*,\s*|\s+(?=[<>=!^~])", constraint.strip()):
        match = re.fullmatch(r"(>=|<=|>|<|=|!=|\^|~)?\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-0)?", part.strip())
        assert match, constraint
        operator = match.group(1) or "="
        major, minor, patch = int(match.group(2)), int(match.group(3) or 0), int(match.group(4) or 0)
        wanted = (major, minor, patch)
        if operator == "^":        # same major (Masterminds: ^1.16 is >=1.16.0 <2.0.0)
            result &= wanted <= version < (major + 1, 0, 0)
        elif operator == "~":      # same minor
            result &= wanted <= version < (major, minor + 1, 0)
        else:
            result &= {">=": version >= wanted, "<=": version <= wanted, ">": version > wanted,
                       "<": version < wanted, "=": version == wanted, "!=": version != wanted}[operator]
    return result


def _template_texts(chart_dir: Path):
    for path in sorted(chart_dir.rglob("*")):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".tpl") and "templates" in path.parts:
            yield path, path.read_text()


def test_the_engines_defaults_change_nothing_here(helm, tmp_path, rendered):
    """Helm v4's offline render uses its built-in capabilities (a kube version from
    its client-go) and answers `lookup` with nothing; Helm v3 in Pulumi's Release
    and in k3s's helm-controller sees the live cluster. For these charts neither
    changes a render: every KubeVersion branch and kubeVersion constraint decides
    the same at 1.34 as at the engine's default, and the only `lookup` is Liqo's
    cluster-ID ConfigMap (first install: the value; later: kept, and a changed
    clusterID refused by the chart on a live cluster, never here)."""
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "kube.yaml").write_text(
        "kube: {{ .Capabilities.KubeVersion.Version }}\n"
        "lookup: {{ lookup \"v1\" \"ConfigMap\" \"liqo\" \"liqo-clusterid-configmap\" | toJson }}\n")
    with helm.Chart.load(probe) as chart:
        out = yaml.safe_load(chart.render({}, name="probe", namespace="probe")["probe/templates/kube.yaml"])
    default = tuple(int(x) for x in re.match(r"v(\d+)\.(\d+)\.(\d+)", out["kube"]).groups())
    assert out["lookup"] == {}
    ours = tuple(int(x) for x in KUBERNETES_VERSION.split(".")) + (0,)
    constraints, lookups = [], []
    for chart_dir in CHART_DIRS.values():
        for path, text in _template_texts(chart_dir):
            constraints += _SEMVER_ON_KUBE.findall(text)
            if _LOOKUP.search(text):
                lookups.append(path.relative_to(upstream.UPSTREAM).as_posix())
        kube_version = yaml.safe_load((chart_dir / "Chart.yaml").read_text()).get("kubeVersion")
        if kube_version:
            assert _satisfies(kube_version, ours), (chart_dir, kube_version)
    assert constraints, "no KubeVersion branch found: the scan is broken"
    for constraint in set(constraints):
        assert _satisfies(constraint, ours) == _satisfies(constraint, default), (constraint, default)
    assert lookups == ["liqo-v1.2.0/chart/templates/liqo-clusterid-configmap.yaml"]
    # The device plugin's NFD subchart (a .tgz, not scanned above) is disabled by its condition.
    assert not [t for t, _ in rendered["nvidia-device-plugin"] if "/charts/" in t]
