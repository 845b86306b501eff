"""Whole classes of malformed input, each refused with one line naming the key.

A review tried 182 malformed values as a new user would; these are the classes
it found accepted (though AWS, Pulumi or Kubernetes refuse them), silently
reinterpreted, or reported misleadingly. Each test covers a class, not a value."""

from __future__ import annotations

import json

import pytest

from components.config import ConfigError, parse
from tests.test_config import HOMELAB, _error, _parse
from tools import harness

BUDGET = {"hybrid-llm:budgetMonthlyUsd": "20"}


# --- accepted though AWS, Pulumi or Kubernetes refuse it --------------------------


@pytest.mark.parametrize("overrides,key", [
    ({"hybrid-llm:homelabNodes": json.dumps(["talos-1\n"])}, "hybrid-llm:homelabNodes"),
    ({"hybrid-llm:models": json.dumps(["llama3.2:3b\n"])}, "hybrid-llm:models"),
    ({**BUDGET, "hybrid-llm:budgetEmails": json.dumps(["ops@example.org\n"])}, "hybrid-llm:budgetEmails"),
    ({"aws:region": "us-east-1\n"}, "aws:region"),
    ({"aws:allowedAccountIds": json.dumps(["123456789012\n"])}, "aws:allowedAccountIds"),
    ({"hybrid-llm:gpuInstanceType": "g4dn.xlarge\n"}, "hybrid-llm:gpuInstanceType"),
    ({"hybrid-llm:lighthouseInstanceType": "t4g.nano\n"}, "hybrid-llm:lighthouseInstanceType"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "home.example.net\n:4242"},
     "hybrid-llm:homelabLighthouseEndpoint"),
])
def test_a_trailing_newline_is_not_part_of_a_name(run_program, overrides, key):
    """`re.match(...$)` matches before a final newline; AWS and Kubernetes do not."""
    message = _error(run_program, overrides)
    assert message.startswith(f"{key}:"), message


@pytest.mark.parametrize("schedule,words", [
    ("cron(60 * * * ? *)", "minutes"),
    ("cron(0 24 * * ? *)", "hours"),
    ("cron(0 0 32 * ? *)", "day-of-month"),
    ("cron(0 0 0 * ? *)", "day-of-month"),
    ("cron(0 0 1 13 ? *)", "month"),
    ("cron(0 0 1 FOO ? *)", "month"),
    ("cron(0 0 ? * 8 *)", "day-of-week"),
    ("cron(0 0 ? * 0 *)", "day-of-week"),
    ("cron(0 0 ? * MON-FUN *)", "day-of-week"),
    ("cron(0 0 * * ? 1969)", "year"),
    ("cron(0 0 * * ? 2200)", "year"),
    ("cron(0/0 * * * ? *)", "minutes"),
    ("cron(0 0 5-40 * ? *)", "day-of-month"),
    ("cron(0 0 ? * ? *)", "exactly one"),
    ("cron(0 0 1W * ? *)", None),   # accepted: a weekday
])
def test_cron_fields_eventbridge_refuses(run_program, schedule, words):
    overrides = {"hybrid-llm:scalerSchedule": schedule}
    if words is None:
        assert _parse(overrides).scaler_schedule == schedule
        return
    message = _error(run_program, overrides)
    assert message.startswith("hybrid-llm:scalerSchedule:") and words in message, message


@pytest.mark.parametrize("schedule", ["cron(0 18 ? * MON-FRI *)", "cron(0 0 1 JAN,JUL ? 2025-2030)",
                                      "cron(15 10 ? * 6L 2019-2032)", "cron(0 9 ? * 2#1 *)",
                                      "cron(0 0 L * ? *)", "cron(0/15 * * * ? *)", "cron(5,35 14 * * ? *)",
                                      "cron(0 8 1 * ? *)", "cron(59 23 31 12 ? 2199)", "cron(0 12 ? * SUN,SAT *)",
                                      "cron(*/10 9-17 ? * 2-6 *)"])
def test_cron_fields_eventbridge_accepts(schedule):
    assert _parse({"hybrid-llm:scalerSchedule": schedule}).scaler_schedule == schedule


def test_more_budget_emails_than_a_notification_takes(run_program):
    """AWS Budgets: one notification has at most 10 e-mail subscribers."""
    emails = [f"ops{i}@example.org" for i in range(11)]
    message = _error(run_program, {**BUDGET, "hybrid-llm:budgetEmails": json.dumps(emails)})
    assert message.startswith("hybrid-llm:budgetEmails:") and "10" in message
    assert len(_parse({**BUDGET, "hybrid-llm:budgetEmails": json.dumps(emails[:10])}).budget_emails) == 10


@pytest.mark.parametrize("stack", ["Prod", "my_stack", "prod.eu"])
def test_a_stack_name_that_makes_no_liqo_cluster_id(stack):
    """Workers' cluster ids are `<project>-<stack>-gpu-N`: a DNS label, as Liqo wants."""
    with pytest.raises(ConfigError) as info:
        harness.run(harness.stack_config("dev"), stack=stack)
    message = str(info.value)
    assert message.startswith(f"stack name {stack!r}:") and "DNS label" in message and "\n" not in message


# --- silently reinterpreted ------------------------------------------------------


@pytest.mark.parametrize("value", ["1_0", "\uff11\uff10", "+2", "2.0", "0x2", " 1 2", "\u0662"])
def test_whole_numbers_are_ascii_digits(run_program, value):
    """Python's int() takes `1_0` and full-width or Arabic-Indic digits; Pulumi does not."""
    message = _error(run_program, {"hybrid-llm:gpuWorkers": value})
    assert message.startswith("hybrid-llm:gpuWorkers:") and "whole number" in message, message


@pytest.mark.parametrize("overrides,key", [
    ({"hybrid-llm:scalerSchedule": "rate(\uff15 minutes)"}, "scalerSchedule"),
    ({"hybrid-llm:gpuSpotMaxPrice": "\uff10.\uff12"}, "gpuSpotMaxPrice"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "home.example.net:\uff14\uff12\uff14\uff12"},
     "homelabLighthouseEndpoint"),
])
def test_digits_inside_values_are_ascii(run_program, overrides, key):
    assert _error(run_program, overrides).startswith(f"hybrid-llm:{key}:")


# --- misleading messages -----------------------------------------------------------


@pytest.mark.parametrize("key", ["vpcCidr", "nebulaCidr", "gpuClusterPodCidr", "homelabPodCidr"])
def test_a_cidr_without_prefix_length_says_so(run_program, key):
    message = _error(run_program, {f"hybrid-llm:{key}": "10.0.0.0"})
    assert message.startswith(f"hybrid-llm:{key}:") and "prefix length" in message and "/32" not in message


@pytest.mark.parametrize("overrides,key", [
    ({"hybrid-llm:homelabNodes": json.dumps(["a" * 70])}, "homelabNodes"),
    ({**HOMELAB, "hybrid-llm:homelabNodes": json.dumps(["nas-1", "nas-2"]),
      "hybrid-llm:homelabLighthouseNode": "n" * 64}, "homelabLighthouseNode"),
    ({"hybrid-llm:homelabClusterId": "h" * 64}, "homelabClusterId"),
    ({"hybrid-llm:homelabNodeLabel": "example.org/" + "l" * 64}, "homelabNodeLabel"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "h" * 64 + ".example.net:4242"},
     "homelabLighthouseEndpoint"),
])
def test_an_overlong_dns_label_is_blamed_on_its_length(run_program, overrides, key):
    message = _error(run_program, overrides)
    assert message.startswith(f"hybrid-llm:{key}:") and "longer than 63" in message, message


@pytest.mark.parametrize("key", ["gpuWorkers", "idleMinutes", "nebulaPort", "maxRunHours", "budgetMonthlyUsd",
                                 "gpuRootVolumeGiB", "modelVolumeGiB", "nebulaEarlyRenewalHours",
                                 "gpuSpotMaxPrice"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", ".nan", ".inf"])
def test_nan_and_infinity_are_not_numbers(run_program, key, value):
    message = _error(run_program, {f"hybrid-llm:{key}": value})
    assert message.startswith(f"hybrid-llm:{key}:") and "not a number" in message, message


def test_the_region_message_stays_one_line():
    raw = harness.stack_config("dev", {"aws:region": "us-east-1\n"})
    with pytest.raises(ConfigError) as info:
        parse(raw, project="hybrid-llm", stack="dev")
    assert "\n" not in str(info.value) and str(info.value).startswith("aws:region:")


def test_a_root_volume_below_the_snapshot_is_a_whole_sentence(run_program):
    """The mocks' AMI snapshot is 75 GiB; 0 takes the AMI's own size."""
    message = _error(run_program, {"hybrid-llm:gpuRootVolumeGiB": "74"})
    assert message.startswith("hybrid-llm:gpuRootVolumeGiB: 74 GiB is smaller than the root snapshot")
    assert "set it to 0 (the AMI's own size)" in message and message.endswith("75 or more")
