"""Validation against the real upstream data in ../shared/upstream/ (never a schema
typed here): Liqo's CRDs for the custom resources we render, and the charts' own
values.yaml for every values key we set (Helm ignores a misspelt key silently)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.conftest import ROOT

UPSTREAM = ROOT.parent / "shared" / "upstream"
LIQO = UPSTREAM / "liqo-v1.2.0"
OLLAMA = UPSTREAM / "ollama-helm-1.77.0"
DEVICE_PLUGIN = UPSTREAM / "nvidia-device-plugin-0.17.0"


@cache
def _liqo_crds() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the CRD's openAPIV3Schema."""
    found = {}
    for path in sorted((LIQO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    assert found, f"no Liqo CRDs under {LIQO}"
    return found


def is_liqo(document: dict) -> bool:
    return document.get("apiVersion", "").split("/")[0].endswith("liqo.io")


def validate_liqo(document: dict) -> None:
    """Raise jsonschema.ValidationError when `document` breaks its Liqo CRD's schema,
    KeyError when Liqo v1.2.0 has no such kind."""
    schema = _liqo_crds()[(document["apiVersion"], document["kind"])]
    jsonschema.validate(document, schema, cls=jsonschema.Draft7Validator)


@cache
def chart_values(chart: str) -> dict:
    path = {"liqo": LIQO / "values.yaml", "ollama": OLLAMA / "values.yaml"}[chart]
    return yaml.safe_load(path.read_text())


def unknown_keys(values: Any, defaults: Any, prefix: str = "") -> list[str]:
    """Dotted paths of keys in `values` that the chart's values.yaml does not have.
    A key whose default is a map is followed into; a default of a list or a scalar
    (or an empty map: free-form) ends the check there."""
    if not isinstance(values, dict) or not isinstance(defaults, dict):
        return []
    missing = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            missing.append(path)
        elif isinstance(defaults[key], dict) and defaults[key]:
            missing += unknown_keys(value, defaults[key], f"{path}.")
    return missing


def with_crd_defaults(document: dict) -> dict:
    """A copy of `document` as the API server validates it: every field its Liqo
    CRD's schema gives a `default` filled in where the document leaves it out
    (structural-schema defaulting runs before validation; Liqo's own chart relies
    on it, e.g. FirewallConfiguration filter rules' `counter`)."""
    schema = _liqo_crds()[(document["apiVersion"], document["kind"])]
    return _defaulted(copy.deepcopy(document), schema)


def _defaulted(value: Any, schema: dict) -> Any:
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _defaulted(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in properties:
                    _defaulted(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _defaulted(item, schema["items"])
    return value
