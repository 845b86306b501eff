"""tools/plan.py as a user runs it: a subprocess, exit codes, files it writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def plan(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "plan.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    result = plan("--json", str(out / "plan.json"), "--render", str(out / "files"))
    assert result.returncode == 0, result.stderr
    return result, json.loads((out / "plan.json").read_text()), out / "files"


def test_prints_the_tree_and_outputs(planned):
    result, document, _ = planned
    assert "hybrid-llm:index:Network  hybrid-llm-dev" in result.stdout
    assert "    aws:ec2/vpc:Vpc  hybrid-llm-dev-vpc" in result.stdout, "children are indented under the component"
    vpc_id = document["outputs"]["vpcId"]
    assert f"vpcId: {vpc_id}" in result.stdout


def test_json_lists_the_network_with_inputs(planned):
    _, document, _ = planned
    by_type = {}
    for resource in document["resources"]:
        by_type.setdefault(resource["type"], []).append(resource)
        assert set(resource) == {"type", "name", "urn", "parent", "custom", "inputs", "dependencies", "provider"}
    for needed in ("aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway",
                   "aws:ec2/routeTable:RouteTable", "aws:ec2/securityGroup:SecurityGroup"):
        assert needed in by_type, needed
    (vpc,) = by_type["aws:ec2/vpc:Vpc"]
    assert vpc["inputs"]["cidrBlock"] == "10.0.0.0/16" and vpc["custom"] is True
    (network,) = by_type["hybrid-llm:index:Network"]
    assert network["custom"] is False
    assert vpc["parent"] == network["urn"]
    assert vpc["urn"].startswith("urn:pulumi:dev::hybrid-llm::")


def test_set_overrides_like_pulumi_config_set(tmp_path):
    result = plan("--set", "hybrid-llm:vpcCidr=10.8.0.0/16", "--set", "nebulaPort=5353",
                  "--json", str(tmp_path / "p.json"))
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "p.json").read_text())
    (vpc,) = [r for r in document["resources"] if r["type"] == "aws:ec2/vpc:Vpc"]
    assert vpc["inputs"]["cidrBlock"] == "10.8.0.0/16"
    ports = {r["inputs"]["fromPort"] for r in document["resources"]
             if r["type"] == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"}
    assert ports == {5353}


@pytest.mark.parametrize("setting,names", [
    ("hybrid-llm:nebulaCidr=10.0.0.0/16", ["hybrid-llm:nebulaCidr", "hybrid-llm:vpcCidr", "overlaps"]),
    ("hybrid-llm:gpuInstanceType=t3.micro", ["hybrid-llm:gpuInstanceType"]),
    ("hybrid-llm:gpuWorkrs=2", ["hybrid-llm:gpuWorkrs", "unknown key", "hybrid-llm:gpuWorkers"]),
    ("hybrid-llm:idleMinutes", ["--set", "KEY=VALUE"]),
])
def test_invalid_config_exits_2_with_one_line(setting, names):
    result = plan("--set", setting)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for name in names:
        assert name in lines[0]


def test_unknown_stack_exits_2():
    result = plan("--stack", "nosuchstack")
    assert result.returncode == 2 and "Pulumi.nosuchstack.yaml" in result.stderr


def test_runs_from_any_directory(tmp_path):
    result = plan(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Stack dev:" in result.stdout


def test_unwritable_json_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = plan("--json", str(blocker / "plan.json"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {blocker / 'plan.json'}: cannot write")
    assert "Traceback" not in result.stderr


def test_unwritable_render_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = plan("--render", str(blocker))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and blocker.read_text() == "x"


@pytest.mark.parametrize("text", ["config:\n  aws:region: [oops\n", "config: 3\n", "[1, 2]\n"])
def test_broken_stack_file_exits_2_with_one_line(tmp_path, text):
    """A copy of the project with a broken stack file, run as a user would."""
    for name in ("Pulumi.yaml", "__main__.py"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    (tmp_path / "Pulumi.broken.yaml").write_text(text)
    result = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r); from tools import plan, harness; "
        "from pathlib import Path; harness.ROOT = Path(%r); "
        "sys.exit(plan.main(['--stack', 'broken']))") % (str(ROOT), str(tmp_path))],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Pulumi.broken.yaml:")


def test_a_new_render_removes_what_an_older_render_wrote(tmp_path):
    out = tmp_path / "render"
    assert plan("--set", "gpuWorkers=2", "--render", str(out)).returncode == 0
    assert (out / "workers" / "gpu-1" / "boot.sh").exists()
    (out / "notes.txt").write_text("mine")
    assert plan("--render", str(out)).returncode == 0
    assert not (out / "workers" / "gpu-1").exists(), "files of the removed worker are gone"
    assert (out / "workers" / "gpu-0" / "boot.sh").exists()
    assert (out / "notes.txt").read_text() == "mine", "files the plan did not write are kept"
    assert not list(out.rglob(".*.tmp*")) and not [p for p in out.rglob(".boot.sh.*")]


# --- --render writes and deletes only inside DIR -----------------------------------------


def _fake_plan(*paths: str):
    """A plan whose render writes exactly these files (no Kubernetes documents)."""
    from tools import harness

    return harness.Plan(stack="dev", config={},
                        files=[harness.RenderedFile(path=p, content=f"{p}\n", secret=False) for p in paths])


def _render(paths, directory):
    from tools import plan as plan_tool

    return plan_tool.render(_fake_plan(*paths), directory, show_secrets=False)


def test_render_ignores_an_absolute_entry_in_its_record(tmp_path):
    """End to end: a `.plan-render` naming a file outside DIR by absolute path
    leaves that file (and its emptied folders) alone, with one warning line."""
    victim = tmp_path / "outside" / "deep" / "victim.txt"
    victim.parent.mkdir(parents=True)
    victim.write_text("keep me")
    out = tmp_path / "render"
    out.mkdir()
    (out / ".plan-render").write_text(f"{victim}\n")
    result = plan("--render", str(out))
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "keep me"
    warnings = [line for line in result.stderr.splitlines() if str(victim) in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:") and "Traceback" not in result.stderr
    assert str(victim) not in (out / ".plan-render").read_text()


def test_render_ignores_dotdot_and_escaping_entries(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("keep")
    out = tmp_path / "render"
    out.mkdir()
    (out / ".plan-render").write_text("../outside/a.txt\nsub/../../outside/a.txt\n")
    _render(["workers/gpu-0/boot.sh"], out)
    assert (outside / "a.txt").read_text() == "keep"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("warning:") for line in err), err


def test_render_deletes_nothing_through_a_symlink_inside_dir(tmp_path, capsys):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "victim.txt").write_text("keep")
    out = tmp_path / "render"
    out.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    (out / ".plan-render").write_text("link/sub/victim.txt\n")
    _render(["workers/gpu-0/boot.sh"], out)
    assert (outside / "sub" / "victim.txt").read_text() == "keep"
    assert (outside / "sub").is_dir(), "an emptied folder outside DIR is never removed"
    assert (out / "link").is_symlink(), "the link itself was not written by the plan: kept"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and "link/sub/victim.txt" in err[0]


def test_render_writes_nothing_through_a_symlink_inside_dir(tmp_path):
    from tools import plan as plan_tool

    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "render"
    (out / "workers").mkdir(parents=True)
    (out / "workers" / "gpu-0").symlink_to(outside, target_is_directory=True)
    with pytest.raises(plan_tool.WriteError) as caught:
        _render(["workers/gpu-0/boot.sh"], out)
    assert "symlink" in str(caught.value) and "\n" not in str(caught.value)
    assert list(outside.iterdir()) == []
    # a symlink at the file's own name is replaced, never written through
    target = outside / "target.txt"
    target.write_text("keep")
    (out / "workers" / "gpu-0").unlink()
    (out / "workers" / "gpu-0").mkdir()
    (out / "workers" / "gpu-0" / "boot.sh").symlink_to(target)
    _render(["workers/gpu-0/boot.sh"], out)
    assert target.read_text() == "keep"
    boot = out / "workers" / "gpu-0" / "boot.sh"
    assert not boot.is_symlink() and boot.read_text() == "workers/gpu-0/boot.sh\n"


def test_render_through_a_symlinked_dir_writes_into_its_target(tmp_path):
    """DIR itself may be a symlink the user names: it is resolved once."""
    real = tmp_path / "real"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real, target_is_directory=True)
    _render(["a/b.txt"], alias)
    assert (real / "a" / "b.txt").read_text() == "a/b.txt\n"
    _render(["c.txt"], alias)
    assert not (real / "a").exists() and (real / "c.txt").exists()
    assert alias.is_symlink() and real.is_dir()


def test_render_prunes_emptied_folders_only_inside_dir(tmp_path, capsys):
    out = tmp_path / "render"
    _render(["x/y/z.txt", "keep.txt"], out)
    _render(["keep.txt"], out)
    assert not (out / "x").exists(), "emptied folders inside DIR are removed"
    assert out.is_dir() and (out / "keep.txt").exists()
    _render([], out)
    assert out.is_dir() and not (out / "keep.txt").exists(), "DIR itself is kept, even empty of our files"
    assert (out / ".plan-render").read_text() == ""
    assert capsys.readouterr().err == ""


def test_render_keeps_what_replaced_a_file_it_wrote(tmp_path):
    """A listed name that is now a folder is not ours to delete."""
    out = tmp_path / "render"
    _render(["a.txt"], out)
    (out / "a.txt").unlink()
    (out / "a.txt").mkdir()
    (out / "a.txt" / "mine").write_text("mine")
    _render([], out)
    assert (out / "a.txt" / "mine").read_text() == "mine"


# --- --help ---------------------------------------------------------------------------


def test_help_describes_every_option():
    result = plan("--help")
    assert result.returncode == 0 and result.stderr == ""
    text = " ".join(result.stdout.split())
    described = {
        "--stack STACK": ["Pulumi.<STACK>.yaml", "default: dev"],
        "--set KEY=VALUE": ["pulumi config set", "repeat"],
        "--json FILE": ["every resource", "not written unless given"],
        "--render DIR": ["generated file", ".plan-render", "only inside DIR"],
        "--show-secrets": ["[secret]", "0600"],
        "-h, --help": ["show this help message"],
    }
    for option, words in described.items():
        assert option in text, option
        for word in words:
            assert word in text, (option, word)
    examples = result.stdout.split("examples:", 1)[1]
    assert examples.count("tools/plan.py ") >= 2
    assert "exit" in text.lower() and "2" in text


def test_json_carries_each_resources_dependencies_and_the_destroy_order(tmp_path, capsys):
    """What `pulumi destroy` orders deletes by, from the program itself: a test or a
    reader can replay the engine's order (tools/destroy_order.py) from the file."""
    from tools import destroy_order
    from tools import plan as plan_tool

    out = tmp_path / "plan.json"
    assert plan_tool.main(["--stack", "dev", "--json", str(out), "--destroy-order"]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    resources = {r["urn"]: r for r in data["resources"]}
    instance = next(r for r in data["resources"] if r["name"] == "hybrid-llm-dev-gpu-0-instance")
    guard = next(r for r in data["resources"] if r["name"] == "hybrid-llm-dev-gpu-0-spot-guard")
    assert instance["urn"] in guard["dependencies"]
    assert instance["provider"] and resources[instance["provider"]]["type"] == "pulumi:providers:aws"
    order = data["destroyOrder"]
    assert sorted(u for wave in order for u in wave) == sorted(resources)
    wave = destroy_order.wave_of(order)
    assert wave[guard["urn"]] < wave[instance["urn"]] < wave[instance["provider"]]
    section = printed.split("Destroy order (pulumi destroy, first wave first):\n", 1)[1]
    listed = [line for line in section.splitlines() if line.strip().split(".", 1)[0].isdigit()]
    assert len(listed) == len(order)
    assert "hybrid-llm-dev-gpu-0-spot-guard" in listed[wave[guard["urn"]]]
