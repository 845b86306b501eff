"""Cost figures against a bill computed here by hand from the price figures."""

from __future__ import annotations

import pytest

from components import costs
from components.config import ConfigError, parse
from tools import harness, plan as plan_tool

HOURS = 730
# us-east-1 figures, written out (see components/costs.py for their sources).
T4G_NANO, G4DN_SPOT, G4DN_ON_DEMAND = 0.0042, 0.20, 0.526
GP3, IPV4, METRIC, GET_METRIC_DATA, PUT_METRIC_DATA, ALARM = 0.08, 0.005, 0.30, 0.01 / 1000, 0.01 / 1000, 0.10
LAMBDA_REQUEST, LAMBDA_GB_S, LOGS_GB = 0.20e-6, 0.0000133334, 0.50


def config(overrides=None, stack="dev"):
    return parse(harness.stack_config(stack, overrides), project=harness.PROJECT, stack=stack)


def hand_idle(workers=1, root=100, models=100, runs=HOURS * 60):
    lighthouse = T4G_NANO * HOURS + 8 * GP3 + IPV4 * HOURS
    disks = workers * (root + models) * GP3
    scaler = runs * LAMBDA_REQUEST + runs * 1.0 * 128 / 1024 * LAMBDA_GB_S \
        + runs * 1024 / 1e9 * LOGS_GB + 2 * ALARM + 1 * METRIC
    return lighthouse + disks + scaler


# While a worker runs: 3 custom metrics (Activity, Ready, GpuUtilization; the
# activator's Activity is the same metric), one PutMetricData a minute from the
# agent plus at most one a minute from the activator, and each scaler run reads 2
# metrics (Activity and Ready) of the worker.
RUNNING_METRICS, AGENT_PUTS, ACTIVATOR_PUTS_AT_MOST, READ_PER_RUN = 3, 60, 60, 2


def hand_active(gpu_hourly, runs_per_hour=60):
    return (gpu_hourly + IPV4 + RUNNING_METRICS * METRIC / HOURS
            + (AGENT_PUTS + ACTIVATOR_PUTS_AT_MOST) * PUT_METRIC_DATA
            + runs_per_hour * READ_PER_RUN * GET_METRIC_DATA)


def test_default_stack_bill_by_hand():
    bill = costs.bill(config())
    # 3.066 + 0.64 + 3.65 + 8 + 8 + (0.00876 + 0.07300 + 0.02243 + 0.20 + 0.30) = 23.96
    assert bill.idle_monthly_usd == pytest.approx(hand_idle(), abs=1e-6)
    assert round(bill.idle_monthly_usd, 2) == 23.96
    assert bill.active_hourly_usd == pytest.approx(hand_active(G4DN_SPOT), abs=1e-9)
    days = HOURS / 24
    for hours in (2, 4, 8, 24):
        assert bill.monthly_at(hours) == pytest.approx(hand_idle() + hours * days * hand_active(G4DN_SPOT))
    # 0.20 + 0.005 + 3 x 0.30 / 730 + 120 x 0.00001 + 60 x 2 x 0.00001 = 0.208633 an hour
    assert round(bill.active_hourly_usd, 6) == 0.208633
    assert round(bill.monthly_at(24), 2) == 176.26  # 23.960 + 730 h x 0.208633


def test_idle_items_name_every_cost_while_stopped():
    items = {item.name: item.monthly_usd for item in costs.bill(config()).idle_items}
    assert items["lighthouse t4g.nano"] == pytest.approx(T4G_NANO * HOURS)
    assert items["lighthouse Elastic IP (public IPv4)"] == pytest.approx(3.65)
    assert items["model volumes 1 x 100 GiB gp3"] == pytest.approx(8.0)
    assert all(item.source for item in costs.bill(config()).idle_items)


def test_on_demand_two_workers_and_sizes():
    bill = costs.bill(config({"hybrid-llm:gpuSpot": "false", "hybrid-llm:gpuWorkers": "2",
                              "hybrid-llm:modelVolumeGiB": "250", "hybrid-llm:scalerSchedule": "rate(5 minutes)"}))
    assert bill.idle_monthly_usd == pytest.approx(hand_idle(workers=2, models=250, runs=HOURS * 12))
    assert bill.active_hourly_usd == pytest.approx(hand_active(G4DN_ON_DEMAND, runs_per_hour=12))
    assert bill.monthly_at(4) == pytest.approx(bill.idle_monthly_usd + 2 * 4 * HOURS / 24 * bill.active_hourly_usd)


@pytest.mark.parametrize("schedule, per_day", [
    ("rate(1 minute)", 1440), ("rate(2 hours)", 12), ("rate(1 day)", 1),
    ("cron(0/5 8-17 * * ? *)", 12 * 10), ("cron(0,30 * * * ? *)", 48), ("cron(15 3 * * ? *)", 1),
])
def test_schedule_runs(schedule, per_day):
    assert costs.runs_per_month(schedule) == pytest.approx(per_day * HOURS / 24)


def test_unpriced_region_and_type_are_one_line_naming_the_key():
    with pytest.raises(ConfigError) as err:
        costs.bill(config({"aws:region": "eu-central-1", "hybrid-llm:availabilityZone": ""}))
    assert str(err.value).startswith("aws:region: ") and "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        costs.bill(config({"hybrid-llm:gpuInstanceType": "p5.48xlarge"}))
    assert str(err.value).startswith("hybrid-llm:gpuInstanceType: ") and "p5.48xlarge" in str(err.value)
    with pytest.raises(ConfigError) as err:
        costs.bill(config({"hybrid-llm:lighthouseInstanceType": "m7g.large"}))
    assert str(err.value).startswith("hybrid-llm:lighthouseInstanceType: ")


def test_monthly_at_rejects_more_than_a_day():
    with pytest.raises(ValueError):
        costs.bill(config()).monthly_at(25)


def test_stack_outputs_carry_the_figures(dev_plan):
    assert dev_plan.outputs["costIdleMonthlyUsd"].value == pytest.approx(round(hand_idle(), 2))
    assert dev_plan.outputs["costActiveHourlyUsd"].value == pytest.approx(round(hand_active(G4DN_SPOT), 4))
    assert not dev_plan.outputs["costIdleMonthlyUsd"].secret


def test_unpriced_region_still_deploys_without_figures(run_program):
    plan = run_program({"aws:region": "eu-central-1", "hybrid-llm:availabilityZone": ""})
    assert plan.outputs["costIdleMonthlyUsd"].value is None
    assert plan.outputs["costActiveHourlyUsd"].value is None


def test_plan_tool_prints_the_bill(capsys):
    assert plan_tool.main(["--stack", "dev"]) == 0
    out = capsys.readouterr().out
    assert f"{hand_idle():9.2f} USD  total while idle" in out
    for hours, label in ((2, "2 h/day"), (4, "4 h/day"), (8, "8 h/day"), (24, "always on")):
        expected = hand_idle() + hours * HOURS / 24 * hand_active(G4DN_SPOT)
        assert f"{expected:9.2f} USD  {label}" in out


def test_budget_only_when_asked(dev_plan, run_program):
    assert dev_plan.of_type("aws:budgets/budget:Budget") == []
    plan = run_program({"hybrid-llm:budgetMonthlyUsd": "40", "hybrid-llm:budgetEmails": '["ops@example.org"]'})
    (budget,) = plan.of_type("aws:budgets/budget:Budget")
    props = budget.plain()
    assert (props["budgetType"], props["timeUnit"], float(props["limitAmount"]), props["limitUnit"]) == \
        ("COST", "MONTHLY", 40.0, "USD")
    alerts = {(n["notificationType"], n["threshold"], n["thresholdType"]): n["subscriberEmailAddresses"]
              for n in props["notifications"]}
    assert alerts == {("ACTUAL", 80, "PERCENTAGE"): ["ops@example.org"],
                      ("FORECASTED", 100, "PERCENTAGE"): ["ops@example.org"]}
    assert plan.by_urn(budget.parent).type == "hybrid-llm:index:CostGuard"
