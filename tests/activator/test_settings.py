"""The environment contract: defaults, and one line naming each malformed variable."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
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


# --- Bad input as classes: every form of a malformed value is one line naming its variable.

NUMERIC_NOT_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "+Infinity", "1e400", "-1e400"]
NUMERIC_NOT_ASCII = ["1_0", "１０", "٣", "1_000.5", "²"]


def _numeric_variables() -> list[str]:
    """Every documented ACTIVATOR_* variable that takes a number, found by giving each
    one "7": a number setting added later is covered without editing this list."""
    import activator

    names = re.findall(r"^  (ACTIVATOR_[A-Z_]+)", activator.__doc__ or "", re.M)
    defaults = from_env(GOOD)
    found = []
    for name in names:
        try:
            settings = from_env({**GOOD, name: "7"})
        except SettingsError:
            continue
        changed = [f.name for f in dataclasses.fields(Settings)
                   if getattr(settings, f.name) != getattr(defaults, f.name)]
        if changed and all(type(getattr(settings, c)) in (int, float) for c in changed):
            found.append(name)
    return found


NUMERIC = _numeric_variables()


def test_the_numeric_variables_are_all_found() -> None:
    assert {"ACTIVATOR_PORT", "ACTIVATOR_HOLD_SECONDS", "ACTIVATOR_MAX_HELD", "ACTIVATOR_POLL_SECONDS",
            "ACTIVATOR_CONNECT_TIMEOUT", "ACTIVATOR_POD_COOLDOWN_SECONDS", "ACTIVATOR_FIRST_BYTE_SECONDS",
            "ACTIVATOR_STREAM_IDLE_SECONDS", "ACTIVATOR_SHUTDOWN_SECONDS",
            "ACTIVATOR_RESTART_CHECK_SECONDS"} <= set(NUMERIC)


def _refused(name: str, value: str) -> str:
    with pytest.raises(SettingsError) as caught:
        from_env({**GOOD, name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and "\n" not in message, message
    assert value in message or repr(value) in message, message
    return message


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", NUMERIC_NOT_FINITE)
def test_a_number_that_is_not_finite_is_named_so(name: str, value: str) -> None:
    assert "not a finite number" in _refused(name, value)


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", NUMERIC_NOT_ASCII + ["1" * 5000, "0x10", " ", "1 0"])
def test_a_number_is_plain_ascii_digits(name: str, value: str) -> None:
    if not value.strip():
        assert from_env({**GOOD, name: value}) == from_env(GOOD)  # blank: the default
        return
    _refused(name, value)


@pytest.mark.parametrize("name, value", [
    ("ACTIVATOR_HOLD_SECONDS", "2.5"), ("ACTIVATOR_HOLD_SECONDS", ".5"), ("ACTIVATOR_HOLD_SECONDS", "1e3"),
    ("ACTIVATOR_HOLD_SECONDS", " 90 "), ("ACTIVATOR_HOLD_SECONDS", "+90"), ("ACTIVATOR_MAX_HELD", "007"),
    ("ACTIVATOR_PORT", "65535"),
])
def test_plain_numbers_are_read(name: str, value: str) -> None:
    from_env({**GOOD, name: value})


@pytest.mark.parametrize("value", [
    "http://ollama:11434/api", "http://ollama:11434/api/", "http://ollama:11434//", "http://ollama:11434/;x",
    "http://ollama:11434?", "http://ollama:11434/?a=1", "http://ollama:11434#", "http://ollama:11434#top",
    "http://user:secret@ollama:11434", "http://user@ollama:11434", "http://@ollama:11434",
    "ws://ollama:11434", "unix:///run/ollama.sock", "file:///etc/passwd", "//ollama:11434",
    "http://oll ama:11434", "http://oll\tama:11434", "http://ollama\n:11434", "http://ölama:11434",
    "http://-ollama:11434", "http://ollama..lab:11434", "http://256.1.1.1:11434", "http://[::1:11434",
    "http://ollama:0", "http://ollama:1_0", "http://:11434",
])
def test_a_backend_is_a_root_url_of_an_http_server(value: str) -> None:
    _refused("ACTIVATOR_BACKEND", value)


@pytest.mark.parametrize("value, backend", [
    ("http://ollama:11434", "http://ollama:11434"), ("http://ollama:11434/", "http://ollama:11434"),
    ("https://Ollama.Lab.example", "https://Ollama.Lab.example"), ("HTTP://ollama", "http://ollama"),
    ("http://[::1]:11434/", "http://[::1]:11434"), ("http://10.0.0.5:11434", "http://10.0.0.5:11434"),
    ("http://ollama_1:11434", "http://ollama_1:11434"),
])
def test_good_backends(value: str, backend: str) -> None:
    assert from_env({**GOOD, "ACTIVATOR_BACKEND": value}).backend == backend


@pytest.mark.parametrize("value", ["a b", "[::1]", "-bad", "bad-", "a..b", ".", "256.1.1.1", "1.2.3",
                                   "010.0.0.1", "ｈｏｓｔ", "höst", "host/x", "host:80", "x" * 64,
                                   ".".join(["a" * 60] * 5), "tab\there"])
def test_a_host_is_an_ip_address_or_a_hostname(value: str) -> None:
    message = _refused("ACTIVATOR_HOST", value)
    assert "ACTIVATOR_PORT" not in message


@pytest.mark.parametrize("value", ["0.0.0.0", "::", "::1", "127.0.0.1", "localhost", "activator.lab.example",
                                   "activator.lab.example.", "fe80::1%lo", "nan"])
def test_good_hosts(value: str) -> None:
    assert from_env({**GOOD, "ACTIVATOR_HOST": value}).host == value


@pytest.mark.parametrize("environ, name", [
    ({**GOOD, "ACTIVATOR_BACKEND": "http://ollama:11434/api"}, "ACTIVATOR_BACKEND"),
    ({**GOOD, "ACTIVATOR_BACKEND": "http://me:secret@ollama:11434"}, "ACTIVATOR_BACKEND"),
    ({**GOOD, "ACTIVATOR_HOST": "-bad"}, "ACTIVATOR_HOST"),
    ({**GOOD, "ACTIVATOR_CONNECT_TIMEOUT": "nan"}, "ACTIVATOR_CONNECT_TIMEOUT"),
    ({**GOOD, "ACTIVATOR_MAX_HELD": "1" * 5000}, "ACTIVATOR_MAX_HELD"),
    ({**GOOD, "ACTIVATOR_PORT": "9" * 5000}, "ACTIVATOR_PORT"),
])
def test_bad_input_through_the_process_is_one_line(environ: dict[str, str], name: str) -> None:
    done = _run_module({**environ, "AWS_REGION": "us-east-1"})
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"activator: {name}: "), done.stderr
    assert done.stdout == ""


def _bind_failure(host: str, port: int) -> subprocess.CompletedProcess[str]:
    return _run_module({**GOOD, "ACTIVATOR_BACKEND": "http://127.0.0.1:9", "AWS_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "ACTIVATOR_WATCH_PODS": "false", "ACTIVATOR_HOST": host, "ACTIVATOR_PORT": str(port),
                        "ACTIVATOR_CONNECT_TIMEOUT": "1"})


def test_a_host_that_cannot_be_bound_names_host_and_port() -> None:
    done = _bind_failure("192.0.2.1", 18080)  # TEST-NET-1: never an address of this machine
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "ACTIVATOR_HOST='192.0.2.1'" in lines[0] and "ACTIVATOR_PORT=18080" in lines[0], lines[0]


def test_a_port_in_use_names_host_and_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _bind_failure("127.0.0.1", port)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "ACTIVATOR_HOST='127.0.0.1'" in lines[0] and f"ACTIVATOR_PORT={port}" in lines[0], lines[0]
