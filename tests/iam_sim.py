"""A small IAM policy evaluator for tests: explicit Deny wins, then any Allow.

Enough of the real rules for the policies this program writes (Action/NotAction,
Resource/NotResource with `*` wildcards, StringEquals conditions). It answers
"may this role do X on Y", which is what a least-privilege claim is about.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, Mapping, Optional

# What AmazonSSMManagedInstanceCore grants that matters here: parameter reads on
# every parameter (AWS's managed policy, attached for Session Manager).
SSM_CORE_PARAMETER_READS = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"], "Resource": "*"}],
}


def _listify(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _matches(patterns, value: str, *, case_sensitive: bool) -> bool:
    for pattern in _listify(patterns):
        if case_sensitive and fnmatch.fnmatchcase(value, pattern):
            return True
        if not case_sensitive and fnmatch.fnmatchcase(value.lower(), pattern.lower()):
            return True
    return False


def _conditions_hold(statement: dict, context: Mapping[str, str]) -> bool:
    for operator, tests in statement.get("Condition", {}).items():
        if operator != "StringEquals":
            raise NotImplementedError(operator)
        for key, expected in tests.items():
            if context.get(key) not in _listify(expected):
                return False
    return True


def _applies(statement: dict, action: str, resource: str, context: Mapping[str, str]) -> bool:
    if "Action" in statement and not _matches(statement["Action"], action, case_sensitive=False):
        return False
    if "NotAction" in statement and _matches(statement["NotAction"], action, case_sensitive=False):
        return False
    if "Resource" in statement and not _matches(statement["Resource"], resource, case_sensitive=True):
        return False
    if "NotResource" in statement and _matches(statement["NotResource"], resource, case_sensitive=True):
        return False
    return _conditions_hold(statement, context)


def allowed(documents: Iterable[dict], action: str, resource: str,
            context: Optional[Mapping[str, str]] = None) -> bool:
    statements = [s for d in documents for s in d["Statement"]]
    hits = [s for s in statements if _applies(s, action, resource, context or {})]
    if any(s["Effect"] == "Deny" for s in hits):
        return False
    return any(s["Effect"] == "Allow" for s in hits)
