"""Whether the policy pack, run with a given `--policy-pack-config`, would refuse
the world-open Nebula rule a stack's `nebulaPort` gives its security groups.

The offline plan checks a stack file's port with it (tools/harness.py
`stack_config`); under `pulumi preview --policy-pack policy` the pack itself
refuses it. The program cannot: it does not know which pack config a preview
will be given.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Optional

from components.config import NAMESPACE

_WHOLE_PORT_DIGITS = 6
_POLICY_DIR = Path(__file__).resolve().parent.parent / "policy"
_NEBULA_RULE = "no-open-ingress"


def _policy_rules():
    """The policy pack's rules module (policy/rules.py, standard library only), loaded
    by path: the pack is no package of this program."""
    name = "_hybrid_llm_policy_rules"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _POLICY_DIR / "rules.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module      # its dataclasses look their module up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def policy_pack_port_problem(port: str, pack_config: Path) -> Optional[str]:
    """Why the policy pack, run with `pack_config` as its `--policy-pack-config`,
    would refuse the world-open Nebula rule that `nebulaPort` gives the security
    groups (components/aws/network.py), in the pack's own words; None if it would
    not, or if `port` is no whole number (`parse` says so)."""
    text = str(port).strip()
    if not text.isascii() or not text.isdigit() or len(text) > _WHOLE_PORT_DIGITS:
        return None
    try:
        settings = json.loads(pack_config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return (f"{NAMESPACE}:nebulaPort: cannot check it against the policy pack: "
                f"{pack_config.parent.name}/{pack_config.name} is not readable JSON ({err})")
    settings = settings if isinstance(settings, dict) else {}
    rule_config = settings.get(_NEBULA_RULE)
    # A policy's config is its enforcement level, or an object that may carry one;
    # "all" sets the pack's. Advisory or disabled, the pack refuses nothing.
    levels = [level for level in (c if isinstance(c, str) else c.get("enforcementLevel")
                                  for c in (settings.get("all"), rule_config) if isinstance(c, (str, dict)))
              if level]
    if levels and levels[-1] in ("advisory", "disabled"):
        return None
    rules = _policy_rules()
    props = {"ipProtocol": "udp", "fromPort": int(text), "toPort": int(text), "cidrIpv4": "0.0.0.0/0"}
    found = rules.violations(rules.SG_INGRESS, props, "nebula",
                             {_NEBULA_RULE: rule_config if isinstance(rule_config, dict) else {}})
    for message in found.get(_NEBULA_RULE, []):
        reason = message.removeprefix("nebula: ")
        return (f"{NAMESPACE}:nebulaPort: {text} is refused by the policy pack run with "
                f"{pack_config.parent.name}/{pack_config.name} ({_NEBULA_RULE}: {reason}); "
                "give both the same port")
    return None
