"""An optional AWS Budget: e-mail before a forgotten GPU becomes a surprise bill.

The budget covers the whole account's monthly cost, not only this stack: a tag
filter would need the `Project` cost-allocation tag activated by hand in the
billing console first, and an unactivated filter silently counts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

ACTUAL_PERCENT = 80
FORECAST_PERCENT = 100


@dataclass
class CostGuardArgs:
    monthly_usd: int
    emails: Sequence[str]


class CostGuard(pulumi.ComponentResource):
    """A monthly COST budget alerting at 80% actual and 100% forecasted spend."""

    budget_name: pulumi.Output[str]

    def __init__(self, name: str, args: CostGuardArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:CostGuard", name, None, opts)
        budget = aws.budgets.Budget(
            f"{name}-budget",
            budget_type="COST",
            time_unit="MONTHLY",
            limit_amount=f"{args.monthly_usd:.1f}",
            limit_unit="USD",
            notifications=[
                aws.budgets.BudgetNotificationArgs(
                    comparison_operator="GREATER_THAN", notification_type=kind,
                    threshold=percent, threshold_type="PERCENTAGE",
                    subscriber_email_addresses=list(args.emails),
                )
                for kind, percent in (("ACTUAL", ACTUAL_PERCENT), ("FORECASTED", FORECAST_PERCENT))
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.budget_name = budget.name
        self.register_outputs({"budget_name": self.budget_name})
