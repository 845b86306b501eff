"""The GitHub workflows: valid against the GitHub workflow schema (check-jsonschema's
vendored SchemaStore copy), shell steps clean under shellcheck, the policy pack
applied, `pulumi up` only from main behind a protected environment, and every job
that needs the homelab's API server on a runner inside the home network."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, require_tool

WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("preview.yml", "up.yml")
# The self-hosted runner inside the home network: an ARC runner scale set of this
# name, or a runner registered with this label (README, CI). A GitHub-hosted runner
# never carries it.
HOME_RUNNER = "hybrid-llm-home"
# Pulumi operations that talk to the Kubernetes API server (not a preview, which
# pulumi-kubernetes answers from inputs when the cluster is unreachable).
CLUSTER_COMMANDS = {"up", "update", "refresh", "destroy", "import"}


def load(name: str) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); take it back.
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def pulumi_step(workflow: dict) -> dict:
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]
             if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert len(steps) == 1
    return steps[0]


def runner_labels(job: dict) -> list[str]:
    runs_on = job["runs-on"]
    if isinstance(runs_on, str):
        return [runs_on]
    if isinstance(runs_on, dict):  # {group: ..., labels: ...}
        labels = runs_on.get("labels", [])
        return [labels] if isinstance(labels, str) else list(labels)
    return list(runs_on)


def needs_the_cluster(job: dict) -> bool:
    """The job runs a Pulumi operation that reaches the homelab API server."""
    for step in job["steps"]:
        inputs = step.get("with", {})
        if str(step.get("uses", "")).startswith("pulumi/actions@") and (
                inputs.get("command") in CLUSTER_COMMANDS or inputs.get("refresh") in (True, "true")):
            return True
        if re.search(r"\bpulumi\s+(%s)\b" % "|".join(CLUSTER_COMMANDS), step.get("run", "")):
            return True
    return False


def test_every_workflow_is_checked_here():
    assert {p.name for p in WORKFLOWS.iterdir() if p.suffix in (".yml", ".yaml")} == set(NAMES)


def test_workflows_match_the_github_schema():
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         *(str(WORKFLOWS / n) for n in NAMES)],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    stepz: []\n")
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows", str(broken)], capture_output=True, text=True, check=False)
    assert done.returncode != 0


@pytest.mark.parametrize("name", NAMES)
def test_run_steps_pass_shellcheck(name, tmp_path):
    shellcheck = require_tool("shellcheck")
    scripts = [s["run"] for job in load(name)["jobs"].values() for s in job["steps"] if "run" in s]
    assert scripts
    for index, script in enumerate(scripts):
        path = tmp_path / f"step{index}.sh"
        path.write_text("#!/usr/bin/env bash\nset -e\n" + script)
        done = subprocess.run([shellcheck, str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("name, command", [("preview.yml", "preview"), ("up.yml", "up")])
def test_both_run_pulumi_with_the_policy_pack(name, command):
    workflow = load(name)
    step = pulumi_step(workflow)
    assert step["uses"] == "pulumi/actions@v7"
    inputs = step["with"]
    assert inputs["command"] == command
    assert inputs["policyPacks"] == "policy" and (ROOT / inputs["policyPacks"] / "PulumiPolicy.yaml").exists()
    assert (ROOT / inputs["policyPackConfigs"]).exists()
    assert set(step["env"]) == {"PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE"}
    assert all(v.startswith("${{ secrets.") for v in step["env"].values())
    runs = "\n".join(s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"])
    assert "-r requirements.txt" in runs and "-r policy/requirements.txt" in runs
    aws = [s for job in workflow["jobs"].values() for s in job["steps"]
           if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")]
    assert aws and "role-to-assume" in aws[0]["with"] and "aws-access-key-id" not in aws[0]["with"]
    assert workflow["permissions"]["id-token"] == "write"
    assert workflow["permissions"]["contents"] == "read"


def test_preview_comments_on_pull_requests():
    workflow = load("preview.yml")
    assert set(workflow["on"]) == {"pull_request"}
    assert pulumi_step(workflow)["with"]["comment-on-pr"] is True
    assert workflow["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}


def test_up_runs_only_on_main_behind_an_environment():
    workflow = load("up.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}}
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "production"
    assert "pull-requests" not in workflow["permissions"]
    assert workflow["concurrency"]["cancel-in-progress"] is False


@pytest.mark.parametrize("name", NAMES)
def test_jobs_that_need_the_homelab_run_inside_it_previews_on_github(name):
    """A GitHub-hosted runner cannot reach an API server behind the home NAT: up
    and refresh fail on every Kubernetes resource there. Previews need no cluster."""
    for job_id, job in load(name)["jobs"].items():
        labels = runner_labels(job)
        if needs_the_cluster(job):
            assert labels == [HOME_RUNNER], f"{name}: {job_id} runs on {labels}"
        else:
            assert len(labels) == 1 and labels[0].startswith("ubuntu-"), f"{name}: {job_id} runs on {labels}"


def test_the_deploy_runs_on_the_home_runner_and_the_preview_on_github():
    (preview,) = load("preview.yml")["jobs"].values()
    (deploy,) = load("up.yml")["jobs"].values()
    assert runner_labels(preview) == ["ubuntu-latest"] and not needs_the_cluster(preview)
    assert runner_labels(deploy) == [HOME_RUNNER] and needs_the_cluster(deploy)
    assert not re.match(r"(ubuntu|windows|macos)-|self-hosted$", HOME_RUNNER)


def test_two_deploys_never_overlap():
    """One fixed group for the whole workflow: a second push waits, never cancels
    a running `up` (a cancelled up leaves pending operations in the state)."""
    concurrency = load("up.yml")["concurrency"]
    assert concurrency["cancel-in-progress"] is False
    assert "${{" not in concurrency["group"] or "vars.PULUMI_STACK" in concurrency["group"]
