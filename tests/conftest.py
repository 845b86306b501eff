"""Shared fixtures: run the whole program under mocks with a given config, and
require the system tools some tests need (a missing tool fails under CI=true)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Mapping, NoReturn, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import harness  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(message: str) -> NoReturn:
    """Something a test needs is missing: a failure under CI=true, a skip elsewhere."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str) -> str:
    """Path of a system tool. Missing: a failure under CI=true, a skip elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    unavailable(f"{name} is not installed (make test installs it: apt-get install the package that ships it)")


def require_root(reason: str) -> None:
    """Root is needed for network namespaces: a failure under CI=true, a skip elsewhere."""
    if os.geteuid() == 0:
        return
    unavailable(f"needs root: {reason}")


ProgramRunner = Callable[..., harness.Plan]


@pytest.fixture
def run_program() -> ProgramRunner:
    """`run_program({"hybrid-llm:gpuWorkers": "2"}, stack="dev")` → a `harness.Plan`:
    the dev stack's config with these overrides, evaluated under mocks."""

    def run(overrides: Optional[Mapping[str, str]] = None, *, stack: str = "dev") -> harness.Plan:
        return harness.run_stack(stack, overrides)

    return run


@pytest.fixture(scope="session")
def dev_plan() -> harness.Plan:
    """The dev stack as it is, evaluated once per test session (read-only)."""
    return harness.run_stack("dev")


# The three lighthouse placements as config overrides of the dev stack.
PLACEMENTS = harness.PLACEMENTS


@pytest.fixture(scope="session")
def ec2_plan() -> harness.Plan:
    """The dev stack with an EC2 lighthouse (lighthousePlacement ec2), evaluated once."""
    return harness.run_stack("dev", PLACEMENTS["ec2"])


@pytest.fixture(scope="session")
def homelab_lighthouse_plan() -> harness.Plan:
    """The dev stack with its first homelab node as the lighthouse, evaluated once."""
    return harness.run_stack("dev", PLACEMENTS["homelab"])
