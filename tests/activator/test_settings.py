"""The environment contract: defaults, and one line naming each malformed variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from activator.settings import Settings, SettingsError, from_env

ROOT = Path(__file__).resolve().parents[2]
ID_A, ID_B = "i-0123456789abcdef0", "i-0fedcba9876543210"
GOOD = {"ACTIVATOR_BACKEND": "http://ollama.llm-inference.svc.cluster.local:11434/",
        "ACTIVATOR_INSTANCE_IDS": f"{ID_A}, {ID_B}"}


def test_defaults() -> None:
    settings = from_env(GOOD)
    assert settings == Settings(backend="http://ollama.llm-inference.svc.cluster.local:11434",
                                instance_ids=(ID_A, ID_B))
    assert (settings.port, settings.hold_seconds, settings.watch_pods, settings.metric_namespace) == \
        (11434, 480.0, True, "HybridLLM")
    assert settings.proxy_instance_id == ID_A


def test_every_variable_is_read() -> None:
    settings = from_env({**GOOD, "ACTIVATOR_PORT": "8080", "ACTIVATOR_HOST": "127.0.0.1",
                         "ACTIVATOR_HOLD_SECONDS": "90", "ACTIVATOR_WATCH_PODS": "FALSE",
                         "ACTIVATOR_CLUSTER_IDS": "gpu-1,gpu-2", "ACTIVATOR_VIRTUAL_NODES": "vk-1,vk-2",
                         "ACTIVATOR_METRIC_NAMESPACE": "Lab/LLM", "ACTIVATOR_POLL_SECONDS": "0.5",
                         "ACTIVATOR_CONNECT_TIMEOUT": "3", "ACTIVATOR_POD_COOLDOWN_SECONDS": "60",
                         "ACTIVATOR_MODELS": "llama3.2:3b, hf.co/org/model:Q4_K_M",
                         "ACTIVATOR_OLLAMA_VERSION": "0.32.15", "ACTIVATOR_MAX_HELD": "32",
                         "ACTIVATOR_FIRST_BYTE_SECONDS": "900", "ACTIVATOR_STREAM_IDLE_SECONDS": "45",
                         "ACTIVATOR_SHUTDOWN_SECONDS": "20", "ACTIVATOR_RESTART_CHECK_SECONDS": "5"})
    assert (settings.port, settings.host, settings.hold_seconds, settings.watch_pods) == \
        (8080, "127.0.0.1", 90.0, False)
    assert settings.cluster_ids == ("gpu-1", "gpu-2") and settings.virtual_nodes == ("vk-1", "vk-2")
    assert (settings.metric_namespace, settings.poll_seconds, settings.connect_timeout,
            settings.pod_cooldown_seconds) == ("Lab/LLM", 0.5, 3.0, 60.0)
    assert settings.models == ("llama3.2:3b", "hf.co/org/model:Q4_K_M")
    assert (settings.ollama_version, settings.max_held, settings.first_byte_seconds,
            settings.stream_idle_seconds) == ("0.32.15", 32, 900.0, 45.0)
    assert (settings.shutdown_seconds, settings.restart_check_seconds) == (20.0, 5.0)


@pytest.mark.parametrize("name, value", [
    ("ACTIVATOR_BACKEND", None),
    ("ACTIVATOR_BACKEND", "ollama:11434"),
    ("ACTIVATOR_BACKEND", "ftp://ollama"),
    ("ACTIVATOR_BACKEND", "http://ollama:99999"),
    ("ACTIVATOR_BACKEND", "http://ollama:11434/?x=1"),
    ("ACTIVATOR_INSTANCE_IDS", None),
    ("ACTIVATOR_INSTANCE_IDS", " , "),
    ("ACTIVATOR_INSTANCE_IDS", "i-123"),
    ("ACTIVATOR_INSTANCE_IDS", f"{ID_A},{ID_A}"),
    ("ACTIVATOR_PORT", "http"),
    ("ACTIVATOR_PORT", "0"),
    ("ACTIVATOR_PORT", "70000"),
    ("ACTIVATOR_HOLD_SECONDS", "five"),
    ("ACTIVATOR_HOLD_SECONDS", "0"),
    ("ACTIVATOR_HOLD_SECONDS", "-3"),
    ("ACTIVATOR_HOLD_SECONDS", "inf"),
    ("ACTIVATOR_WATCH_PODS", "yes"),
    ("ACTIVATOR_CLUSTER_IDS", "only-one"),
    ("ACTIVATOR_CLUSTER_IDS", "Not_A_Name,b"),
    ("ACTIVATOR_VIRTUAL_NODES", "a,b,c"),
    ("ACTIVATOR_METRIC_NAMESPACE", "AWS/EC2"),
    ("ACTIVATOR_METRIC_NAMESPACE", "has space"),
    ("ACTIVATOR_POLL_SECONDS", "x"),
    ("ACTIVATOR_CONNECT_TIMEOUT", "nan"),
    ("ACTIVATOR_POD_COOLDOWN_SECONDS", "-1"),
    ("ACTIVATOR_HOST", "a b"),
    ("ACTIVATOR_BACKEND", "http://ollama:11434/api"),
    ("ACTIVATOR_MODELS", "llama3.2:3b,bad model"),
    ("ACTIVATOR_OLLAMA_VERSION", "latest"),
    ("ACTIVATOR_MAX_HELD", "0"),
    ("ACTIVATOR_MAX_HELD", "1.5"),
    ("ACTIVATOR_MAX_HELD", "１０"),
    ("ACTIVATOR_FIRST_BYTE_SECONDS", "-1"),
    ("ACTIVATOR_STREAM_IDLE_SECONDS", "never"),
    ("ACTIVATOR_SHUTDOWN_SECONDS", "0"),
    ("ACTIVATOR_RESTART_CHECK_SECONDS", "soon"),
])
def test_a_malformed_variable_is_one_line_naming_it(name: str, value: str | None) -> None:
    environ = dict(GOOD)
    if value is None:
        environ.pop(name)
    else:
        environ[name] = value
    with pytest.raises(SettingsError) as caught:
        from_env(environ)
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "\n" not in message


def _run_module(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACTIVATOR_", "AWS_"))}
    env.update(environ)
    return subprocess.run([sys.executable, "-m", "activator"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("environ, name", [
    ({**GOOD, "ACTIVATOR_HOLD_SECONDS": "soon"}, "ACTIVATOR_HOLD_SECONDS"),
    ({"ACTIVATOR_INSTANCE_IDS": ID_A}, "ACTIVATOR_BACKEND"),
    ({**GOOD, "ACTIVATOR_WATCH_PODS": "maybe"}, "ACTIVATOR_WATCH_PODS"),
    (GOOD, "AWS_REGION"),
])
def test_the_process_exits_2_with_one_line(environ: dict[str, str], name: str) -> None:
    done = _run_module(environ)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and name in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_pod_watch_outside_a_cluster_exits_2(tmp_path: Path) -> None:
    done = _run_module({**GOOD, "AWS_REGION": "us-east-1", "KUBECONFIG": str(tmp_path / "none"),
                        "HOME": str(tmp_path)})
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "ACTIVATOR_WATCH_PODS" in lines[0], done.stderr
