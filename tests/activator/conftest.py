"""Fixtures for the activator: moto in-process with fake credentials."""

from __future__ import annotations

from typing import Any, Iterator

import boto3
import pytest
from moto import mock_aws

from activator.activity import CLOUDWATCH_CONFIG
from activator.waker import EC2_CONFIG

REGION = "us-east-1"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def moto_clients(aws_env: None) -> Iterator[tuple[Any, Any]]:
    """(ec2, cloudwatch) against moto, configured as the activator configures them."""
    with mock_aws():
        yield (boto3.client("ec2", region_name=REGION, config=EC2_CONFIG),
               boto3.client("cloudwatch", region_name=REGION, config=CLOUDWATCH_CONFIG))
