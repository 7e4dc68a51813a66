"""contrib/grafana-dashboard.json against Grafana's dashboard schema.

The schema used is the one Grafana publishes as code: the ``grafana-foundation-sdk``
package's dashboard models are generated from Grafana's dashboard schema (CUE
kinds). The dashboard is decoded with ``Dashboard.from_json``, every value is
checked against the type the generated model declares for it (walking the
model's type hints), and it is encoded back: a key the schema does not know
would be dropped, a value of the wrong type is reported by the walk. Then
every PromQL expression is checked to name only metrics ``netdevkit exporter``
produces.
"""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest

sdk = pytest.importorskip(
    "grafana_foundation_sdk", reason="needs grafana-foundation-sdk (the test extra)"
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: E402

DASHBOARD = Path(__file__).resolve().parent.parent / "contrib" / "grafana-dashboard.json"
EXPORTER = Path(__file__).resolve().parent.parent / "src" / "netdevkit" / "observe" / "exporter.py"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _shallow(value: Any, hint: Any) -> bool:
    """Whether *value* is of *hint* at the top level (containers not entered)."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return True
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (list, dict):
        return isinstance(value, origin)
    if origin in (typing.Union, types.UnionType):
        return any(_shallow(value, h) for h in typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {m.value for m in hint}
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _check(value: Any, hint: Any, path: str, problems: list[str]) -> None:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and hasattr(hint, "from_json") and isinstance(value, dict):
        value = hint.from_json(value)  # some fields stay raw JSON after decoding: decode them
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(hint):
            if _shallow(value, member):
                _check(value, member, path, problems)
                return
    if not _shallow(value, hint):
        problems.append(f"{path}: {value!r} is not a {hint}")
    elif origin is list:
        (item,) = typing.get_args(hint)
        for i, v in enumerate(value):
            _check(v, item, f"{path}[{i}]", problems)
    elif origin is dict:
        item = typing.get_args(hint)[1]
        for k, v in value.items():
            _check(v, item, f"{path}.{k}", problems)
    elif isinstance(hint, type) and hasattr(hint, "from_json"):
        _walk(value, path, problems)


def _walk(obj: Any, path: str, problems: list[str]) -> None:
    hints = typing.get_type_hints(type(obj), vars(__import__(type(obj).__module__, fromlist=["x"])))
    for name, hint in hints.items():
        _check(getattr(obj, name), hint, f"{path}.{name}", problems)


def _lost(original: Any, encoded: Any, path: str = "") -> list[str]:
    """Keys or values of *original* that did not survive the schema's round trip."""
    if isinstance(original, dict):
        if not isinstance(encoded, dict):
            return [f"{path}: became {type(encoded).__name__}"]
        out = []
        for k, v in original.items():
            if k not in encoded:
                out.append(f"{path}/{k}: not in the schema")
            else:
                out += _lost(v, encoded[k], f"{path}/{k}")
        return out
    if isinstance(original, list):
        if not isinstance(encoded, list) or len(encoded) != len(original):
            return [f"{path}: list changed"]
        return [x for i, v in enumerate(original) for x in _lost(v, encoded[i], f"{path}[{i}]")]
    return [] if original == encoded else [f"{path}: {original!r} became {encoded!r}"]


def test_dashboard_matches_grafanas_schema() -> None:
    data = load()
    dash = Dashboard.from_json(data)
    problems: list[str] = []
    _walk(dash, "dashboard", problems)
    assert problems == []
    encoded = json.loads(json.dumps(dash, cls=JSONEncoder))
    assert _lost(data, encoded) == []
    assert data["schemaVersion"] >= 36
    assert data["uid"] and data["title"]


def test_the_schema_check_catches_mistakes() -> None:
    """The two checks above can fail: an unknown key and a wrongly typed value."""
    data = load()
    data["panels"][0]["gridpos"] = data["panels"][0].pop("gridPos")  # misspelt key
    encoded = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    assert any("gridpos" in p for p in _lost(data, encoded))
    data = load()
    data["panels"][0]["gridPos"]["h"] = "eight"
    problems: list[str] = []
    _walk(Dashboard.from_json(data), "dashboard", problems)
    assert any("eight" in p for p in problems)


def _exported_metric_names() -> set[str]:
    text = EXPORTER.read_text()
    names = set(re.findall(r'"(netdevkit_[a-z_]+)"', text))
    # counters are exposed with _total; queue counters are netdevkit_queue_<qstats name>
    return names


def test_every_query_names_metrics_the_exporter_produces() -> None:
    from netdevkit.netdev.family import QSTATS_COUNTERS

    known = _exported_metric_names()
    known |= {n + "_total" for n in known}
    for _id, name, _doc in QSTATS_COUNTERS:
        short = name.split("-", 1)[1].replace("-", "_")
        known.add(f"netdevkit_queue_{short}_total")
    exprs = [t["expr"] for p in load()["panels"] for t in p.get("targets", ())] + [
        v.get("query", "") for v in load()["templating"]["list"]
    ]
    used = {m for e in exprs for m in re.findall(r"\bnetdevkit_[a-z_]+", e)}
    assert used, "the dashboard queries no netdevkit metric"
    assert used - known == set()
