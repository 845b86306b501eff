"""The worker's activity agent (userdata/activity-agent.sh) run for real with bash,
rendered with the component's own values, every command it calls on the instance
(IMDS and Ollama through curl, k3s, nvidia-smi, the AWS CLI, date, sleep) replaced
by a stub that records its arguments. What the stubbed `aws cloudwatch
put-metric-data` received is what the scaler would read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pytest

from components.aws import gpu_worker
from tests.conftest import require_tool

INSTANCE_ID = "i-0123456789abcdef0"
OLLAMA_IP = "10.42.128.5"
# 2026-03-14 09:26:53 UTC: a run at second 53 describes the minute from 09:26:00.
NOW = int(datetime(2026, 3, 14, 9, 26, 53, tzinfo=timezone.utc).timestamp())
MINUTE = NOW - NOW % 60
PYTHON = os.path.realpath(sys.executable)


def pod(name: str, namespace: str, *, labels: Optional[dict] = None, phase: str = "Running",
        ip: Optional[str] = None, gpus: Any = None, where: str = "requests", init: bool = False,
        node: Optional[str] = "gpu-0") -> dict:
    """A pod as `kubectl get pods -o json` lists it; `gpus` goes into the
    resources `where` (requests or limits) of a container or an init container."""
    resources = {where: {"nvidia.com/gpu": gpus, "cpu": "100m"}} if gpus is not None else {"requests": {"cpu": "100m"}}
    container = {"name": "main", "image": "example/main:1", "resources": resources}
    spec = ({"initContainers": [container], "containers": [{"name": "main", "image": "example/main:1"}]}
            if init else {"containers": [container]})
    if node:
        spec["nodeName"] = node
    status = {"phase": phase, **({"podIP": ip} if ip else {})}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": spec, "status": status}


# Ollama's pod as Liqo reflects it into the tenant namespace on the worker (labels kept).
OLLAMA_POD = pod("ollama-7d9f8-x2k4q", "llm-inference-homelab-1a2b3c",
                 labels={"app.kubernetes.io/name": "ollama", "app.kubernetes.io/instance": "ollama"},
                 ip=OLLAMA_IP, gpus=1, where="limits")
DEVICE_PLUGIN = pod("nvidia-device-plugin-5xk2p", "nvidia-device-plugin",
                    labels={"app.kubernetes.io/name": "nvidia-device-plugin"}, ip="10.42.128.2")
COREDNS = pod("coredns-6799fbcd5-q7k9z", "kube-system", labels={"k8s-app": "kube-dns"}, ip="10.42.128.3")
LOADED_MODEL = [{"name": "llama3.2:3b", "size_vram": 3_400_000_000, "expires_at": "2026-03-14T09:36:00Z"}]

_STUBS = {
    "curl": r'''
import json, sys
state = json.load(open(STATE))
args = sys.argv[1:]
record("curl", args)
valued = {"-X", "--request", "-H", "--header", "-o", "--output", "-w", "--write-out", "-m", "--max-time",
          "--connect-timeout"}
method, out, write, fail, url, i = "GET", None, None, False, None, 0
while i < len(args):
    arg = args[i]
    if arg in valued:
        value = args[i + 1]
        if arg in ("-X", "--request"):
            method = value
        elif arg in ("-o", "--output"):
            out = value
        elif arg in ("-w", "--write-out"):
            write = value
        i += 2
        continue
    if arg == "--fail" or (arg.startswith("-") and not arg.startswith("--") and "f" in arg):
        fail = True
    elif not arg.startswith("-"):
        url = arg
    i += 1

def answer(status, body):
    if fail and status >= 400:
        code = 22
    else:
        code = 0
        if out and out != "/dev/null":
            open(out, "w").write(body)
        elif not out:
            sys.stdout.write(body)
    if write:
        sys.stdout.write(write.replace("%{http_code}", str(status)))
    sys.exit(code)

imds = "http://169.254.169.254/latest"
if url == imds + "/api/token":
    answer(200, "TOKEN") if method == "PUT" else answer(405, "")
if url == imds + "/meta-data/instance-id":
    answer(200, state["instance_id"])
ollama = state["ollama"]
if ollama["version"] == "down":             # connection refused
    if write:
        sys.stdout.write(write.replace("%{http_code}", "000"))
    sys.exit(7)
path = url.split("/", 3)[3]
if path == "api/version":
    answer(ollama["version"], '{"version":"0.32.0"}')
if path == "api/ps":
    answer(200, json.dumps({"models": ollama["models"]}))
answer(404, "404 page not found")
''',
    "k3s": r'''
import json, sys
state = json.load(open(STATE))
args = sys.argv[1:]
record("k3s", args)
if state["k3s"] == "fail":
    sys.stderr.write("The connection to the server 127.0.0.1:6443 was refused\n")
    sys.exit(1)
if args[:3] == ["kubectl", "get", "--raw=/readyz"]:
    sys.exit(0 if state["k3s_ready"] else 1)
assert args[:3] == ["kubectl", "get", "pods"], args
options, i = {}, 3
while i < len(args):
    arg = args[i]
    if "=" in arg and arg.startswith("--"):
        key, value = arg.split("=", 1)
        options[key] = value
        i += 1
    elif arg.startswith("-") and arg not in ("--all-namespaces", "-A"):
        options[arg] = args[i + 1]
        i += 2
    else:
        i += 1
pods = state["pods"]
for term in filter(None, (options.get("--field-selector") or "").split(",")):
    negated = "!=" in term
    key, value = term.split("!=" if negated else "=", 1)
    assert key == "status.phase", term
    pods = [p for p in pods if (p["status"]["phase"] == value) != negated]
for term in filter(None, (options.get("--selector") or options.get("-l") or "").split(",")):
    key, value = term.split("=", 1)
    pods = [p for p in pods if p["metadata"]["labels"].get(key) == value]
output = options.get("--output") or options.get("-o")
if output == "json":
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
else:
    assert output == "jsonpath={.items[*].status.podIP}", output
    sys.stdout.write(" ".join(p["status"].get("podIP", "") for p in pods))
''',
    "nvidia-smi": r'''
import json, sys, time
state = json.load(open(STATE))
n = record("nvidia-smi", sys.argv[1:])
readings = state["gpu"]
reading = readings[min(n, len(readings) - 1)]
if reading == "fail":
    print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    sys.exit(9)
if reading == "hang":
    time.sleep(60)
for value in reading:
    print(value)
''',
    "aws": r'''
import json, sys
state = json.load(open(STATE))
record("aws", sys.argv[1:])
sys.exit(state["aws_exit"])
''',
    "date": r'''
import json, os, sys
state = json.load(open(STATE))
record("date", sys.argv[1:])
if sys.argv[1:] != ["+%s"]:
    os.execv("/bin/date", ["date"] + sys.argv[1:])
print(state["now"])
''',
    "sleep": r'''
import sys
record("sleep", sys.argv[1:])
''',
}

_PRELUDE = '''#!{python}
import json
STATE = {state!r}

def record(name, args):
    """Append this call's arguments; the number of earlier calls."""
    path = {calls!r} + "/" + name + ".jsonl"
    try:
        earlier = sum(1 for _ in open(path))
    except FileNotFoundError:
        earlier = 0
    with open(path, "a") as f:
        f.write(json.dumps(args) + "\\n")
    return earlier
'''


class Run:
    def __init__(self, result: subprocess.CompletedProcess, calls: dict[str, list[list[str]]], seconds: float):
        self.result = result
        self.calls = calls
        self.seconds = seconds
        puts = [c for c in calls.get("aws", []) if c[:2] == ["cloudwatch", "put-metric-data"]]
        assert len(puts) <= 1, "one PutMetricData call a run"
        self.put = puts[0] if puts else None
        self.data = json.loads(self.put[self.put.index("--metric-data") + 1]) if self.put else []

    @property
    def values(self) -> dict[str, float]:
        return {datum["MetricName"]: datum["Value"] for datum in self.data}

    def option(self, name: str) -> str:
        return self.put[self.put.index(name) + 1]


class Worker:
    """One worker's world as the stubs answer it; `run()` runs the agent once
    (the same marker directory across runs is the same boot)."""

    def __init__(self, tmp_path: Path, script: str):
        self.root = tmp_path
        self.script = tmp_path / "hybrid-llm-activity"
        self.script.write_text(script)
        self.run_dir = tmp_path / "run" / "hybrid-llm"
        self.now = NOW
        self.pods = [OLLAMA_POD, DEVICE_PLUGIN, COREDNS]
        self.k3s = "ok"
        self.k3s_ready = True
        self.ollama: dict[str, Any] = {"version": 200, "models": []}
        self.gpu: list = [["0"]]
        self.nvidia_smi = True
        self.aws_exit = 0
        self.runs = 0

    def reboot(self) -> None:
        """A stop and start: /run is a fresh tmpfs."""
        self.run_dir = self.root / "run" / f"boot-{self.runs}"

    def run(self) -> Run:
        self.runs += 1
        home = self.root / f"run-{self.runs}"
        bin_dir, calls = home / "bin", home / "calls"
        bin_dir.mkdir(parents=True)
        calls.mkdir()
        state = home / "state.json"
        state.write_text(json.dumps({"instance_id": INSTANCE_ID, "now": self.now, "pods": self.pods,
                                     "k3s": self.k3s, "k3s_ready": self.k3s_ready,
                                     "ollama": self.ollama, "gpu": self.gpu,
                                     "aws_exit": self.aws_exit}))
        prelude = _PRELUDE.format(python=PYTHON, state=str(state), calls=str(calls))
        for name, body in _STUBS.items():
            if name == "nvidia-smi" and not self.nvidia_smi:
                continue
            stub = bin_dir / name
            stub.write_text(prelude + body)
            stub.chmod(0o755)
        # Only these real tools: the script must need nothing else.
        real = home / "real"
        real.mkdir()
        (real / "python3").symlink_to(PYTHON)
        for tool in ("timeout", "mkdir", "sort", "tail"):
            (real / tool).symlink_to(require_tool(tool))
        env = {"PATH": f"{bin_dir}:{real}", "HYBRID_LLM_RUN_DIR": str(self.run_dir), "HOME": str(home),
               "TZ": "America/New_York"}          # the stamp must be UTC whatever the zone
        started = time.monotonic()
        result = subprocess.run([require_tool("bash"), str(self.script)], env=env, capture_output=True,
                                text=True, timeout=120)
        seconds = time.monotonic() - started
        recorded = {path.stem: [json.loads(line) for line in path.read_text().splitlines()]
                    for path in calls.glob("*.jsonl")}
        return Run(result, recorded, seconds)


@pytest.fixture
def worker(tmp_path) -> Worker:
    return Worker(tmp_path, gpu_worker.activity_agent("us-east-1"))


def published(run: Run) -> Run:
    assert run.result.returncode == 0, run.result.stderr
    assert run.put is not None, run.result.stderr
    return run


# --- what counts as work -----------------------------------------------------------------


def test_a_loaded_model_on_an_idle_gpu_is_not_activity(worker):
    """The old agent published Activity 1 here (it counted /api/ps models)."""
    worker.ollama["models"] = LOADED_MODEL
    worker.gpu = [["0"]]
    run = published(worker.run())
    assert run.values == {"Activity": 0, "Ready": 1, "GpuUtilization": 0}
    assert not any(call[-1].endswith("/api/ps") for call in run.calls["curl"])


@pytest.mark.parametrize("readings, activity, utilization", [
    ([["0"]] * 3 + [["85"]] + [["0"]], 1, 85),       # one busy reading in the minute is enough
    ([["97"]], 1, 97),
    ([[str(gpu_worker.ACTIVITY_GPU_BUSY_PERCENT)]], 1, gpu_worker.ACTIVITY_GPU_BUSY_PERCENT),
    ([[str(gpu_worker.ACTIVITY_GPU_BUSY_PERCENT - 1)]], 0, gpu_worker.ACTIVITY_GPU_BUSY_PERCENT - 1),
    ([["0", "0"], ["0", "64"], ["0", "0"]], 1, 64),   # any GPU of several
    ([["[N/A]"], ["3"]], 0, 3),
])
def test_a_busy_gpu_is_activity(worker, readings, activity, utilization):
    worker.now = MINUTE                              # second 0: readings through the minute
    worker.ollama["models"] = LOADED_MODEL
    worker.gpu = readings
    run = published(worker.run())
    assert run.values["Activity"] == activity
    assert run.values["GpuUtilization"] == utilization


def test_readings_run_through_the_minute_and_stop_in_time(worker):
    worker.now = MINUTE
    run = published(worker.run())
    every, until = gpu_worker.ACTIVITY_SAMPLE_EVERY_SECONDS, gpu_worker.ACTIVITY_SAMPLE_UNTIL_SECOND
    readings = run.calls["nvidia-smi"]
    assert until // every - 1 <= len(readings) <= until // every   # SECONDS may tick once meanwhile
    assert readings[0] == ["--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    assert run.calls["sleep"] == [[str(every)]] * (len(readings) - 1)

    worker.now = MINUTE + until + 5                   # a late run: one reading, no waiting
    late = published(worker.run())
    assert len(late.calls["nvidia-smi"]) == 1 and "sleep" not in late.calls


@pytest.mark.parametrize("other", [
    pod("train-1", "jobs", ip="10.42.128.9", gpus="1"),
    pod("train-2", "jobs", ip="10.42.128.10", gpus=2, where="limits"),
    pod("warmup", "jobs", ip="10.42.128.11", gpus="1", init=True),
    pod("notebook", "llm-inference-homelab-1a2b3c", labels={"app.kubernetes.io/name": "jupyter"},
        ip="10.42.128.12", gpus="1"),
])
def test_a_gpu_pod_other_than_ollamas_is_activity(worker, other):
    worker.pods = [OLLAMA_POD, DEVICE_PLUGIN, other]
    run = published(worker.run())
    assert run.values["Activity"] == 1 and run.values["GpuUtilization"] == 0
    (kubectl,) = run.calls["k3s"]
    assert "--field-selector=status.phase!=Succeeded,status.phase!=Failed" in kubectl and "--output=json" in kubectl


@pytest.mark.parametrize("pods", [
    [OLLAMA_POD],                                                     # Ollama's GPU alone
    [OLLAMA_POD, DEVICE_PLUGIN, COREDNS],
    [OLLAMA_POD, pod("train-1", "jobs", phase="Pending", gpus="1", node=None)],  # k3s cannot place it
    [OLLAMA_POD, pod("train-1", "jobs", phase="Succeeded", gpus="1")],
    [OLLAMA_POD, pod("cpu-only", "jobs", ip="10.42.128.9", gpus="0")],
])
def test_ollama_and_pods_without_a_gpu_are_not_activity(worker, pods):
    worker.pods = pods
    assert published(worker.run()).values["Activity"] == 0


# --- Ready: Ollama has answered since this boot ------------------------------------------


def test_ready_once_ollama_answered_and_for_the_rest_of_the_boot(worker):
    worker.ollama["version"] = "down"
    first = published(worker.run())
    assert first.values["Ready"] == 0
    assert [OLLAMA_IP in " ".join(c) for c in first.calls["curl"]].count(True) == 1

    worker.ollama["version"] = 503                   # an answer, but not a 200
    worker.now += 60
    assert published(worker.run()).values["Ready"] == 0

    worker.ollama["version"] = 200
    worker.now += 60
    answered = published(worker.run())
    assert answered.values["Ready"] == 1
    (probe,) = [c for c in answered.calls["curl"] if OLLAMA_IP in " ".join(c)]
    assert probe[-1] == f"http://{OLLAMA_IP}:11434/api/version"

    worker.ollama["version"] = "down"                # briefly down later in the same boot
    worker.now += 60
    again = published(worker.run())
    assert again.values["Ready"] == 1
    assert not [c for c in again.calls["curl"] if OLLAMA_IP in " ".join(c)], "no probe needed"

    worker.reboot()                                  # a stop and start: /run is empty again
    worker.now += 3600
    assert published(worker.run()).values["Ready"] == 0
    worker.ollama["version"] = 200
    worker.now += 60
    assert published(worker.run()).values["Ready"] == 1


def test_ready_needs_an_ollama_pod_to_ask(worker):
    worker.pods = [DEVICE_PLUGIN]
    assert published(worker.run()).values["Ready"] == 0
    worker.pods = [dict(OLLAMA_POD, status={"phase": "Pending"})]
    assert published(worker.run()).values["Ready"] == 0


# --- what cannot be measured counts as idle, and the minute is still published ----------


@pytest.mark.parametrize("case", ["missing", "failing", "hanging"])
def test_a_broken_nvidia_smi_is_idle_and_still_published(worker, case):
    worker.now = MINUTE + 55                         # one reading
    worker.nvidia_smi = case != "missing"
    worker.gpu = {"missing": [["99"]], "failing": ["fail"], "hanging": ["hang"]}[case]
    run = published(worker.run())
    assert run.values == {"Activity": 0, "Ready": 1, "GpuUtilization": 0}
    assert run.seconds < 15, "every nvidia-smi reading has a time limit"


def test_kubectl_failing_counts_no_pods_and_keeps_ready_false(worker):
    worker.k3s = "fail"
    worker.gpu = [["0"]]
    run = published(worker.run())
    assert run.values == {"Activity": 0, "Ready": 0, "GpuUtilization": 0}
    worker.gpu = [["70"]]
    assert published(worker.run()).values["Activity"] == 1


def test_without_an_instance_id_nothing_is_published(worker):
    worker.script.write_text(worker.script.read_text().replace(
        "169.254.169.254/latest\n", "169.254.169.254/unreachable\n"))
    run = worker.run()
    assert run.result.returncode != 0 and run.put is None


# --- the call itself ---------------------------------------------------------------------


def test_one_call_carries_three_points_stamped_with_the_start_of_the_minute(worker):
    run = published(worker.run())
    assert run.put[:2] == ["cloudwatch", "put-metric-data"]
    assert run.option("--region") == "us-east-1"
    assert run.option("--namespace") == gpu_worker.METRIC_NAMESPACE == "HybridLLM"
    assert [d["MetricName"] for d in run.data] == ["Activity", "Ready", "GpuUtilization"]
    stamp = datetime.fromtimestamp(MINUTE, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert stamp == "2026-03-14T09:26:00Z"
    for datum in run.data:
        assert datum["Timestamp"] == stamp
        assert datum["Dimensions"] == [{"Name": "InstanceId", "Value": INSTANCE_ID}]
    assert {d["MetricName"]: d["Unit"] for d in run.data} == {
        "Activity": "Count", "Ready": "Count", "GpuUtilization": "Percent"}
    # Bounded: the CLI's own timeouts (and `timeout` around it, not visible here).
    assert run.option("--cli-connect-timeout") and run.option("--cli-read-timeout")


def test_a_failed_publish_fails_the_unit(worker):
    worker.aws_exit = 255
    run = worker.run()
    assert run.result.returncode == 255 and run.put is not None


def test_the_agent_is_what_the_worker_installs(dev_plan):
    from tests.aws.test_gpu_worker import boot_files
    files = boot_files(dev_plan.file("workers/gpu-0/boot.sh").content)
    assert files["/usr/local/sbin/hybrid-llm-activity"] == gpu_worker.activity_agent("us-east-1").rstrip("\n")


def test_the_marker_defaults_to_a_tmpfs_path():
    script = gpu_worker.activity_agent("us-east-1")
    assert f'RUN_DIR="${{HYBRID_LLM_RUN_DIR:-{gpu_worker.ACTIVITY_RUN_DIR}}}"' in script
    assert gpu_worker.ACTIVITY_RUN_DIR.startswith("/run/")


def test_a_gpu_pod_scheduled_and_starting_is_activity(worker):
    """Pulling a large image can take longer than idleMinutes: a GPU pod on the
    node that is not Running yet is work too."""
    worker.pods = [OLLAMA_POD, pod("train-1", "jobs", phase="Pending", gpus="1", node="gpu-1")]
    assert published(worker.run()).values["Activity"] == 1


def test_a_worker_without_ollama_is_ready_once_k3s_is(tmp_path):
    """Workers after the first never run Ollama: their Ready is k3s's /readyz, or the
    scaler would stop them as never-ready under a running GPU job."""
    worker = Worker(tmp_path, gpu_worker.activity_agent("us-east-1", serves_ollama=False))
    worker.pods = [pod("train-1", "jobs", ip="10.42.129.9", gpus="1", node="gpu-1")]
    worker.ollama["version"] = "down"
    worker.k3s_ready = False
    before = published(worker.run())
    worker.k3s_ready = True
    ready = published(worker.run())
    worker.k3s_ready = False
    still = published(worker.run())
    assert (before.values["Ready"], ready.values["Ready"], still.values["Ready"]) == (0, 1, 1)
    assert before.values["Activity"] == 1
    assert not any("api/version" in " ".join(c) for c in ready.calls.get("curl", []))
