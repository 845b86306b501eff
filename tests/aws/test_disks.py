"""The disks' defaults against what components/aws/disks.py says they hold."""

from __future__ import annotations

import pytest
import yaml

from components import costs
from components.aws import disks
from components.config import parse
from tools import harness

from tests.conftest import ROOT


def config(overrides=None):
    return parse(harness.stack_config("dev", overrides), project=harness.PROJECT, stack="dev")


def declared_default(key: str) -> int:
    return int(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"][key]["default"])


def test_usable_space_is_the_volume_less_ext4_and_the_kubelet_floor():
    # 100 GiB: 1.5625 % inode tables, 5 % floor, 0.125 GiB journal
    assert disks.usable_gib(100) == pytest.approx(100 * (1 - 0.015625 - 0.05) - 0.125)
    assert disks.usable_gib(disks.needed_gib()) == pytest.approx(disks.contents_gib())


def test_the_default_model_volume_holds_its_listed_contents_and_little_more():
    default = declared_default("modelVolumeGiB")
    assert config().model_volume_gib == default
    assert disks.usable_gib(default) >= disks.contents_gib(), "two 8B models, the default model and the images"
    assert default - disks.needed_gib() < 2, "sized to what it holds, not more"
    names = " ".join(c.name for c in disks.MODEL_VOLUME_CONTENTS)
    assert "llama3.1:8b" in names and "qwen3:8b" in names and "ollama/ollama image" in names
    assert all(c.gb > 0 and c.source for c in disks.MODEL_VOLUME_CONTENTS)


def test_the_default_model_is_among_the_contents():
    (default_model,) = config().models
    assert any(c.name.startswith(default_model) for c in disks.MODEL_VOLUME_CONTENTS)


def test_twelve_dollars_would_need_a_volume_that_holds_less():
    """The README's claim: the default stack's $12 target leaves a 21 GiB volume,
    which cannot hold the contents; the default (24) costs $12.17."""
    assert round(costs.bill(config()).idle_monthly_usd, 2) == 12.17
    largest_within = max(g for g in range(1, 40)
                         if costs.bill(config({"hybrid-llm:modelVolumeGiB": str(g)})).idle_monthly_usd <= 12)
    assert largest_within == 21
    assert disks.usable_gib(largest_within) < disks.contents_gib()


def test_the_root_defaults_to_the_amis_own_size_and_the_estimate_uses_the_dlami_figure():
    assert declared_default("gpuRootVolumeGiB") == 0 == config().gpu_root_volume_gib
    items = {i.name: i.monthly_usd for i in costs.bill(config()).idle_items}
    root = next(v for k, v in items.items() if k.startswith("GPU root volumes"))
    assert root == pytest.approx(disks.DLAMI_ROOT_SNAPSHOT_GIB * 0.08)


def test_the_mocks_describe_the_deep_learning_ami_with_the_figure_the_estimate_uses():
    """The offline plan's AMI and the bill agree on 75 GiB, so a test that sets a
    root below it (tests/aws/test_gpu_worker.py) tests the real rule."""
    from tools import mocks
    assert mocks.AwsMocks().ami_root_gib == disks.DLAMI_ROOT_SNAPSHOT_GIB
