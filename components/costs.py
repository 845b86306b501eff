"""What the stack costs: an itemised monthly bill while every GPU is stopped, and
the price of one active GPU hour, from a dated price table and the `StackConfig`.

The point of the design is that idle costs little, so the idle bill names every
item that bills while the workers are stopped (the lighthouse wherever it lives,
the Elastic IPs, the stopped workers' disks, the scaler's schedule) and shows AWS free tiers as not
applied. A region or type missing from the table is one `ConfigError` line naming
the key, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Optional

import pulumi

from components.config import NAMESPACE, PLACEMENTS, ConfigError, StackConfig, schedule_minutes
from components.aws.disks import DLAMI_ROOT_SNAPSHOT_GIB
from components.aws.lighthouse import ROOT_VOLUME_GIB as LIGHTHOUSE_ROOT_GIB

PRICES_AS_OF = "2026-11"
HOURS_PER_MONTH = 730            # AWS's own convention for monthly figures
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
HOURS_PER_DAY_SHOWN = (2, 4, 8, 24)

# What the other components do (components/aws/scaler.py, userdata/activity-agent.sh,
# activator/activity.py); change these with them.
SCALER_MEMORY_MB = 128           # arm64
SCALER_SECONDS_PER_RUN = 1.0     # generous: a few boto3 calls
SCALER_LOG_BYTES_PER_RUN = 1024
SCALER_ALARMS = 2                # the function's Errors and the worker-errors filter
SCALER_FILTER_METRICS = 1        # the log metric filter publishes on every run
# A running worker's custom metrics: Activity, Ready and GpuUtilization (the agent).
# The activator's Activity points carry the same name and InstanceId dimension, so
# they are the same metric, not a fourth.
METRICS_PER_WORKER = 3
AGENT_PUTS_PER_HOUR = 60         # the agent: one PutMetricData a minute carries all three
# The activator: one PutMetricData in each minute with a request in flight, so 60
# is an upper bound (every minute of the active hour busy).
ACTIVATOR_PUTS_PER_HOUR = 60
METRICS_READ_PER_RUN = 2         # the scaler reads Activity and Ready of each running worker
# A running worker's auto-assigned public IPv4 (released while stopped); none
# with lighthousePlacement workers, whose Elastic IP replaces it and bills idle.
PUBLIC_IPV4_PER_RUNNING_WORKER = {"workers": 0, "ec2": 1, "homelab": 1}


class UnpricedError(ConfigError):
    """The price table has no figure for this region or instance type."""


@dataclass(frozen=True)
class RegionPrices:
    instance_hourly: dict[str, float]      # on-demand Linux
    spot_hourly: dict[str, float]          # typical, not guaranteed
    gp3_gb_month: float
    public_ipv4_hourly: float
    cloudwatch_metric_month: float
    cloudwatch_get_metric_data_per_metric: float
    cloudwatch_put_metric_data_per_request: float
    cloudwatch_alarm_month: float
    logs_ingest_per_gb: float
    lambda_per_request: float
    lambda_per_gb_second: float


# Sources, as of PRICES_AS_OF:
# - instances: aws.amazon.com/ec2/pricing/on-demand (Linux, per hour).
# - spot: typical figures from the EC2 Spot price history (aws ec2
#   describe-spot-price-history); spot prices move, these are not quotes.
# - gp3: aws.amazon.com/ebs/pricing ($/GB-month; 3,000 IOPS and 125 MiB/s included).
# - public IPv4: aws.amazon.com/vpc/pricing ($0.005/h per address, Elastic IPs included).
# - CloudWatch: aws.amazon.com/cloudwatch/pricing (custom metric $0.30/month for the
#   first 10,000, prorated by the hour and billed only while published;
#   GetMetricData $0.01 per 1,000 metrics requested; PutMetricData $0.01 per 1,000
#   requests; standard alarm $0.10/month; logs ingestion $0.50/GB).
# - Lambda: aws.amazon.com/lambda/pricing (arm64: $0.20 per 1M requests,
#   $0.0000133334 per GB-second).
# - schedule: aws.amazon.com/eventbridge/pricing (a scheduled rule on the default
#   event bus, which is what the scaler uses, is free; not billed, not listed).
_US_COMMON = dict(
    gp3_gb_month=0.08,
    public_ipv4_hourly=0.005,
    cloudwatch_metric_month=0.30,
    cloudwatch_get_metric_data_per_metric=0.01 / 1000,
    cloudwatch_put_metric_data_per_request=0.01 / 1000,
    cloudwatch_alarm_month=0.10,
    logs_ingest_per_gb=0.50,
    lambda_per_request=0.20 / 1_000_000,
    lambda_per_gb_second=0.0000133334,
)
_US_INSTANCES = {
    "t4g.nano": 0.0042, "t4g.micro": 0.0084, "t4g.small": 0.0168,
    "t3.nano": 0.0052, "t3.micro": 0.0104, "t3.small": 0.0208,
    "g4dn.xlarge": 0.526, "g5.xlarge": 1.006, "g6.xlarge": 0.8048,
}
_US_SPOT = {"g4dn.xlarge": 0.20, "g5.xlarge": 0.40, "g6.xlarge": 0.35}

PRICES: dict[str, RegionPrices] = {
    # US East (N. Virginia) and US West (Oregon) list the same figures for these.
    "us-east-1": RegionPrices(instance_hourly=_US_INSTANCES, spot_hourly=_US_SPOT, **_US_COMMON),
    "us-west-2": RegionPrices(instance_hourly=_US_INSTANCES, spot_hourly=_US_SPOT, **_US_COMMON),
}


@dataclass(frozen=True)
class Item:
    name: str
    monthly_usd: float
    source: str


@dataclass(frozen=True)
class Bill:
    """Idle items per month plus the price of one worker's active hour."""

    idle_items: tuple[Item, ...]
    active_hourly_usd: float
    active_source: str
    workers: int
    placement: str = "workers"
    idle_by_placement: dict[str, float] = field(default_factory=dict)
    """The idle month with the lighthouse in each place (`lighthousePlacement`), the
    rest of the stack as configured; a placement that cannot be priced is left out."""

    @property
    def idle_monthly_usd(self) -> float:
        return sum(item.monthly_usd for item in self.idle_items)

    def monthly_at(self, hours_per_day: float) -> float:
        """The month's cost when every worker runs this many hours a day."""
        if not 0 <= hours_per_day <= 24:
            raise ValueError(f"hours_per_day must be between 0 and 24, got {hours_per_day}")
        return self.idle_monthly_usd + self.workers * hours_per_day * DAYS_PER_MONTH * self.active_hourly_usd

    def lines(self) -> list[str]:
        """The bill as text for tools/plan.py."""
        out = [f"Cost estimate (prices as of {PRICES_AS_OF}, no free tier applied)",
               "  Idle, per month (every GPU stopped):"]
        out += [f"    {item.monthly_usd:9.2f} USD  {item.name}  [{item.source}]" for item in self.idle_items]
        out.append(f"    {self.idle_monthly_usd:9.2f} USD  total while idle")
        others = [f"{placement} {usd:.2f}" for placement, usd in self.idle_by_placement.items()
                  if placement != self.placement]
        if others:
            out.append(f"  Idle with lighthousePlacement {self.placement} (this stack); elsewhere: "
                       f"{', '.join(others)} USD")
        out.append(f"  Active, per GPU worker hour: {self.active_hourly_usd:.4f} USD  [{self.active_source}]")
        out.append(f"  Month with {self.workers} worker(s) running:")
        for hours in HOURS_PER_DAY_SHOWN:
            label = "always on" if hours == 24 else f"{hours} h/day"
            out.append(f"    {self.monthly_at(hours):9.2f} USD  {label}")
        return out


def _prices(cfg: StackConfig) -> RegionPrices:
    if cfg.region not in PRICES:
        raise UnpricedError(f"aws:region: components/costs.py has no prices for {cfg.region} "
                            f"(priced: {', '.join(sorted(PRICES))})")
    return PRICES[cfg.region]


def _hourly(table: dict[str, float], instance_type: str, key: str, region: str, kind: str) -> float:
    if instance_type not in table:
        raise UnpricedError(f"{NAMESPACE}:{key}: components/costs.py has no {kind} price for "
                            f"{instance_type} in {region} (priced: {', '.join(sorted(table))})")
    return table[instance_type]


def _cron_field_count(field: str, size: int) -> int:
    """How many values a cron minute/hour field matches (`*`, `*/N`, `a-b`, `a,b`)."""
    if field in ("*", "?"):
        return size
    count = 0
    for part in field.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            first, last = 0, size - 1
        elif "-" in base:
            first, last = (int(x) for x in base.split("-", 1))
        else:
            first = int(base)
            last = size - 1 if step else first
        count += len(range(first, last + 1, int(step) if step else 1))
    return count


def runs_per_month(schedule: str) -> float:
    """Invocations a month of an EventBridge schedule; cron day fields count as every
    day, so a cron figure is an upper bound."""
    minutes = schedule_minutes(schedule)
    if minutes is not None:
        if minutes < 1:
            raise UnpricedError(f"{NAMESPACE}:scalerSchedule: {schedule!r} never runs")
        return HOURS_PER_MONTH * 60 / minutes
    fields = schedule[len("cron("):-1].split()
    try:
        per_day = _cron_field_count(fields[0], 60) * _cron_field_count(fields[1], 24)
    except (IndexError, ValueError):
        raise UnpricedError(f"{NAMESPACE}:scalerSchedule: cannot count the runs of {schedule!r}") from None
    return per_day * DAYS_PER_MONTH


def bill(cfg: StackConfig) -> Bill:
    """The itemised bill of this stack's configuration."""
    p = _prices(cfg)
    if cfg.gpu_spot:
        gpu_hourly = _hourly(p.spot_hourly, cfg.gpu_instance_type, "gpuInstanceType", cfg.region, "spot")
        gpu_source = f"{cfg.gpu_instance_type} spot, typical"
    else:
        gpu_hourly = _hourly(p.instance_hourly, cfg.gpu_instance_type, "gpuInstanceType", cfg.region, "on-demand")
        gpu_source = f"{cfg.gpu_instance_type} on-demand"

    runs = runs_per_month(cfg.scaler_schedule)
    gb_seconds = runs * SCALER_SECONDS_PER_RUN * SCALER_MEMORY_MB / 1024
    n = cfg.gpu_workers
    items = _mesh_items(cfg, p) + [
        _gpu_root_item(cfg, p),
        Item(f"model volumes {n} x {cfg.model_volume_gib} GiB gp3",
             n * cfg.model_volume_gib * p.gp3_gb_month, f"gp3 {p.gp3_gb_month}/GB-month"),
        Item(f"scaler Lambda requests ({runs:,.0f} runs)", runs * p.lambda_per_request,
             "0.20 per 1M requests"),
        Item(f"scaler Lambda compute (arm64, {SCALER_MEMORY_MB} MB x {SCALER_SECONDS_PER_RUN:g} s a run)",
             gb_seconds * p.lambda_per_gb_second, f"{p.lambda_per_gb_second:.10f}".rstrip("0") + "/GB-s"),
        Item("scaler logs ingestion", runs * SCALER_LOG_BYTES_PER_RUN / 1e9 * p.logs_ingest_per_gb,
             f"{p.logs_ingest_per_gb}/GB at {SCALER_LOG_BYTES_PER_RUN} B a run"),
        Item(f"scaler alarms ({SCALER_ALARMS})", SCALER_ALARMS * p.cloudwatch_alarm_month,
             f"{p.cloudwatch_alarm_month}/alarm-month"),
        Item("scaler error metric (log metric filter)", SCALER_FILTER_METRICS * p.cloudwatch_metric_month,
             f"custom metric {p.cloudwatch_metric_month}/month"),
    ]
    # Billed only in the hours a worker runs: its address, its metrics (prorated by
    # the hour while published), the agent's and the activator's puts (the latter
    # an upper bound) and the scaler reading them.
    runs_per_hour = runs / HOURS_PER_MONTH
    public_ipv4 = PUBLIC_IPV4_PER_RUNNING_WORKER[cfg.lighthouse_placement]
    active = (gpu_hourly
              + public_ipv4 * p.public_ipv4_hourly
              + METRICS_PER_WORKER * p.cloudwatch_metric_month / HOURS_PER_MONTH
              + (AGENT_PUTS_PER_HOUR + ACTIVATOR_PUTS_PER_HOUR) * p.cloudwatch_put_metric_data_per_request
              + runs_per_hour * METRICS_READ_PER_RUN * p.cloudwatch_get_metric_data_per_metric)
    address = " + public IPv4" if public_ipv4 else ""
    source = (f"{gpu_source} {gpu_hourly}/h{address} + {METRICS_PER_WORKER} custom metrics "
              f"+ PutMetricData (agent, activator at most) + GetMetricData")
    mesh_usd = sum(item.monthly_usd for item in _mesh_items(cfg, p))
    by_placement = {}
    for placement in PLACEMENTS:
        try:
            others = _mesh_items(replace(cfg, lighthouse_placement=placement), p)
        except UnpricedError:
            continue
        by_placement[placement] = sum(item.monthly_usd for item in items) - mesh_usd + \
            sum(item.monthly_usd for item in others)
    return Bill(tuple(items), active, source, n, cfg.lighthouse_placement, by_placement)


def _mesh_items(cfg: StackConfig, p: RegionPrices) -> list[Item]:
    """What the lighthouse costs where it lives: an instance with its disk and
    address (`ec2`), an Elastic IP per worker (`workers`), nothing (`homelab`)."""
    eip_month = p.public_ipv4_hourly * HOURS_PER_MONTH
    eip_source = f"{p.public_ipv4_hourly}/h x {HOURS_PER_MONTH} h"
    if cfg.lighthouse_placement == "workers":
        n = cfg.gpu_workers
        return [Item(f"worker Elastic IPs {n} x (each worker its own lighthouse)", n * eip_month, eip_source)]
    if cfg.lighthouse_placement == "homelab":
        return []
    hourly = _hourly(p.instance_hourly, cfg.lighthouse_instance_type, "lighthouseInstanceType", cfg.region,
                     "on-demand")
    return [
        Item(f"lighthouse {cfg.lighthouse_instance_type}", hourly * HOURS_PER_MONTH,
             f"{hourly}/h x {HOURS_PER_MONTH} h"),
        Item(f"lighthouse root volume {LIGHTHOUSE_ROOT_GIB} GiB gp3", LIGHTHOUSE_ROOT_GIB * p.gp3_gb_month,
             f"gp3 {p.gp3_gb_month}/GB-month"),
        Item("lighthouse Elastic IP (public IPv4)", eip_month, eip_source),
    ]


def _gpu_root_item(cfg: StackConfig, p: RegionPrices) -> Item:
    """`gpuRootVolumeGiB` 0 is the AMI's own snapshot: the Deep Learning AMI's
    figure (components/aws/disks.py) unless a pinned AMI says otherwise at `up`."""
    n = cfg.gpu_workers
    size = cfg.gpu_root_volume_gib or DLAMI_ROOT_SNAPSHOT_GIB
    what = f"{size} GiB" if cfg.gpu_root_volume_gib else f"{size} GiB (the Deep Learning AMI's snapshot)"
    return Item(f"GPU root volumes {n} x {what} gp3 (stopped)", n * size * p.gp3_gb_month,
                f"gp3 {p.gp3_gb_month}/GB-month")


def try_bill(cfg: StackConfig) -> Optional[Bill]:
    """The bill, or None with a one-line warning: a missing price never blocks a deployment."""
    try:
        return bill(cfg)
    except UnpricedError as err:
        pulumi.log.warn(f"no cost estimate: {err}")
        return None
