"""hybrid-llm policy pack: `pulumi preview --policy-pack policy` runs it."""

from pulumi_policy import EnforcementLevel, PolicyPack

from pack import PACK_NAME, policies

PolicyPack(name=PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)
