"""The pack's policies, built apart from the `PolicyPack(...)` call (which starts
the analyzer server) so tests can inspect them without an engine."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

import rules

PACK_NAME = "hybrid-llm"
_CONFIG_SCHEMAS = {
    "no-open-ingress": PolicyConfigSchema(properties={
        "nebulaPort": {"type": "integer", "minimum": 1, "maximum": 65535,
                       "default": rules.DEFAULT_NEBULA_PORT,
                       "description": "UDP port Nebula listens on (the stack's hybrid-llm:nebulaPort)."},
    }),
}


def _validator(rule: rules.Rule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule(args.resource_type, args.props, args.name, args.get_config()):
            report_violation(message, None)
    return validate


def policies() -> list[ResourceValidationPolicy]:
    """One mandatory policy per rule in rules.RULES."""
    return [
        ResourceValidationPolicy(
            name=rule.name, description=rule.description, validate=_validator(rule),
            enforcement_level=EnforcementLevel.MANDATORY, config_schema=_CONFIG_SCHEMAS.get(rule.name),
        )
        for rule in rules.RULES
    ]
