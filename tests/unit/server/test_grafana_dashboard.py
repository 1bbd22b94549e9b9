"""configs/deploy/grafana-dashboard.json: a dashboard Grafana can import, whose queries use only metrics the server
exports (aieval_server/metrics.py), and which shows every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[3] / "configs" / "deploy" / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\baieval_[a-z0-9_]+\b")
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_samples() -> dict[str, str]:
    """Every sample name a scrape can carry -> the metric it belongs to."""
    from aieval_server import metrics

    names = {}
    for metric in metrics.RECORDED:
        (family,) = metric.describe()
        for suffix in SAMPLE_SUFFIXES[family.type]:
            names[family.name + suffix] = family.name
    for name in metrics.FROM_DATABASE:
        names[name] = name
    return names


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def test_the_dashboard_is_valid_and_queries_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    every = panels(dashboard)
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exported = exported_samples()
    used: set[str] = set()
    for panel in every:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = METRIC_NAME.findall(target["expr"])
            assert names, f"{panel['title']!r}: {target['expr']} uses no metric of the server"
            unknown = [name for name in names if name not in exported]
            assert not unknown, f"{panel['title']!r} queries metrics the server does not export: {unknown}"
            used.update(exported[name] for name in names)
    assert set(exported.values()) - used == set(), "metrics the dashboard does not show"
