"""Schedules (services/schedules.py): cron validation and next times, the API, the tick's claim (compare-and-set) and
the gate rules on known paired results (services/gates.py). The run of a real schedule with a real worker, two
concurrent ticks on PostgreSQL and the gate on a worse run: tests/integration/server/test_schedules_gates.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

UTC = timezone.utc


# ---- cron ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expression", ["0 2 * * *", "  */15  *  * * 1-5 ", "@daily", "@HOURLY", "0 0 1 */3 *"])
def test_cron_expressions_the_schedules_accept(expression):
    from aieval_server.services.schedules import check_cron

    assert check_cron(expression) == " ".join(expression.split()).replace("@HOURLY", "@hourly")


@pytest.mark.parametrize("expression", ["0 2 * *", "0 0 2 * * *", "61 * * * *", "every day", "@reboot", "* * * * * * *"])
def test_cron_expressions_refused_with_the_rule(expression):
    from aieval_server.services.errors import Invalid
    from aieval_server.services.schedules import check_cron

    with pytest.raises(Invalid) as refused:
        check_cron(expression)
    assert "five fields" in refused.value.problems[0]


def test_next_runs_are_read_in_the_schedules_time_zone():
    from aieval_server.services.schedules import next_runs

    after = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    # 02:00 in Shanghai (UTC+8) is 18:00 UTC the day before: the first one after midnight UTC is that evening.
    assert next_runs("0 2 * * *", "Asia/Shanghai", after, 2) == [datetime(2026, 3, 1, 18, 0, tzinfo=UTC),
                                                                 datetime(2026, 3, 2, 18, 0, tzinfo=UTC)]
    assert next_runs("0 2 * * *", "UTC", after) == [datetime(2026, 3, 1, 2, 0, tzinfo=UTC)]
    # Berlin moves from UTC+1 to UTC+2 on 29 March 2026: 09:00 local follows it.
    berlin = next_runs("0 9 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, 0, tzinfo=UTC), 2)
    assert berlin == [datetime(2026, 3, 29, 7, 0, tzinfo=UTC), datetime(2026, 3, 30, 7, 0, tzinfo=UTC)]
    # 02:30 does not exist in Berlin that morning (02:00 jumps to 03:00): that day it runs at 03:00 local.
    skipped = next_runs("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, 0, tzinfo=UTC), 2)
    assert skipped == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC), datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]


def test_unknown_time_zone_is_refused():
    from aieval_server.services.errors import Invalid
    from aieval_server.services.schedules import next_runs

    with pytest.raises(Invalid, match="unknown time zone 'Mars/Olympus'"):
        next_runs("@daily", "Mars/Olympus", datetime.now(UTC))


# ---- the API and the tick -----------------------------------------------------------------------------------------
def _model_and_dataset(client):
    model = client.post("/api/v1/models", json={"name": "ep", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                               "model": "m"}).json()
    dataset = client.post("/api/v1/datasets", files={"file": ("qa.csv", b"question,answer\nq,a\n")}).json()["dataset"]
    return model, dataset


def _schedule(client, **extra):
    model, dataset = _model_and_dataset(client)
    body = {"name": "nightly", "cron": "0 2 * * *", "timezone": "Asia/Shanghai",
            "request": {"model_ids": [model["id"]], "dataset_ids": [dataset["id"]], "params": {"limit": 1}}, **extra}
    response = client.post("/api/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_schedule_crud_preview_and_refusals(client):
    schedule = _schedule(client, gate_rules=[{"kind": "no_significant_drop"},
                                             {"kind": "min_score", "dataset": "qa", "threshold": 50}])
    assert schedule["enabled"] and len(schedule["next_runs"]) == 5
    assert schedule["next_run_at"] == schedule["next_runs"][0]
    assert all(datetime.fromisoformat(t).astimezone(UTC).hour == 18 for t in schedule["next_runs"])  # 02:00 +08
    assert schedule["gate_rules"][0] == {"kind": "no_significant_drop", "alpha": 0.05}
    assert [s["id"] for s in client.get("/api/v1/schedules").json()] == [schedule["id"]]

    disabled = client.patch(f"/api/v1/schedules/{schedule['id']}", json={"enabled": False}).json()
    assert disabled["next_run_at"] is None and disabled["next_runs"] == []
    edited = client.patch(f"/api/v1/schedules/{schedule['id']}", json={"enabled": True, "cron": "30 6 * * 1"}).json()
    assert edited["cron"] == "30 6 * * 1" and datetime.fromisoformat(edited["next_run_at"]).weekday() in (0, 6)

    preview = client.get("/api/v1/schedules/preview", params={"cron": "*/10 * * * *"})
    assert preview.status_code == 200 and len(preview.json()["next_runs"]) == 5
    bad_cron = client.get("/api/v1/schedules/preview", params={"cron": "0 2 * *"})
    assert bad_cron.status_code == 422 and "five fields" in bad_cron.text
    bad_zone = client.post("/api/v1/schedules", json={"name": "x", "cron": "@daily", "timezone": "Nowhere/Else",
                                                      "request": schedule["request"]})
    assert bad_zone.status_code == 422 and "unknown time zone" in bad_zone.json()["detail"]
    unknown_model = client.post("/api/v1/schedules", json={"name": "x", "cron": "@daily",
                                                           "request": {**schedule["request"], "model_ids": [999]}})
    assert unknown_model.status_code == 422 and unknown_model.json()["detail"].startswith("unknown model")
    bad_rule = client.post("/api/v1/schedules", json={"name": "x", "cron": "@daily", "request": schedule["request"],
                                                      "gate_rules": [{"kind": "min_score", "threshold": 1}]})
    assert bad_rule.status_code == 422
    nested = client.post("/api/v1/schedules", json={"name": "x", "cron": "@daily",
                                                    "request": {**schedule["request"], "schedule_id": schedule["id"]}})
    assert nested.status_code == 422 and "schedule_id" in nested.json()["detail"]

    queued = client.post(f"/api/v1/schedules/{schedule['id']}/run-now")
    assert queued.status_code == 201, queued.text
    assert queued.json()["schedule_id"] == schedule["id"] and queued.json()["name"].startswith("nightly 20")
    not_yet = client.put(f"/api/v1/schedules/{schedule['id']}/baseline", json={"evaluation_id": queued.json()["id"]})
    assert not_yet.status_code == 409 and "only a succeeded evaluation" in not_yet.json()["detail"]

    assert client.delete(f"/api/v1/schedules/{schedule['id']}").status_code == 204
    run = client.get(f"/api/v1/evaluations/{queued.json()['id']}").json()
    assert run["schedule_id"] is None and run["status"] == "queued"  # its runs stay, as ordinary evaluations


def test_tick_submits_a_due_schedule_once_and_moves_it_to_its_next_time(client, settings, queued_messages):
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation, Schedule
    from aieval_server.services.schedules import tick

    schedule = _schedule(client)
    now = datetime.now(UTC)
    with session_scope(settings.database_url) as session:
        session.get(Schedule, schedule["id"]).next_run_at = now - timedelta(minutes=1)
    before = len(queued_messages())
    submitted = tick(settings, now=now)
    assert len(submitted) == 1 and len(queued_messages()) == before + 1
    assert tick(settings, now=now) == []  # claimed: its next time is tomorrow's 02:00 in Shanghai
    with session_scope(settings.database_url) as session:
        row = session.get(Schedule, schedule["id"])
        run = session.get(Evaluation, submitted[0])
        assert row.next_run_at > now and row.next_run_at.astimezone(UTC).hour == 18
        assert row.last_evaluation_id == run.id and row.last_error is None
        assert run.schedule_id == schedule["id"] and run.status == "queued" and run.params["limit"] == 1
    listed = client.get(f"/api/v1/schedules/{schedule['id']}").json()
    assert listed["last_evaluation_id"] == submitted[0] and listed["last_evaluation_status"] == "queued"


def test_a_refused_run_is_recorded_on_the_schedule_and_keeps_the_claim(client, settings):
    from aieval_server.db import session_scope
    from aieval_server.models import Schedule
    from aieval_server.services.schedules import tick

    schedule = _schedule(client)
    now = datetime.now(UTC)
    with session_scope(settings.database_url) as session:
        row = session.get(Schedule, schedule["id"])
        row.next_run_at = now - timedelta(minutes=1)
        row.request = {**row.request, "model_ids": [424242]}  # the model was deleted since
    assert tick(settings, now=now) == []
    shown = client.get(f"/api/v1/schedules/{schedule['id']}").json()
    assert "unknown model id(s): 424242" in shown["last_error"]
    assert datetime.fromisoformat(shown["next_run_at"]) > now and tick(settings, now=now) == []


def test_claim_is_a_compare_and_set_on_the_time_read(client, settings):
    """Two ticks that read the same due time: the first moves it on, the second finds it moved and takes nothing."""
    from aieval_server.db import session_scope
    from aieval_server.models import Schedule
    from aieval_server.services.schedules import claim

    schedule = _schedule(client)
    now = datetime.now(UTC)
    due = now - timedelta(seconds=5)
    with session_scope(settings.database_url) as session:
        session.get(Schedule, schedule["id"]).next_run_at = due
    with session_scope(settings.database_url) as first:
        taken = claim(first, schedule["id"], due, now)
        assert taken is not None and taken.next_run_at > now
    with session_scope(settings.database_url) as second:
        assert claim(second, schedule["id"], due, now) is None
    with session_scope(settings.database_url) as session:
        session.get(Schedule, schedule["id"]).enabled = False
        session.get(Schedule, schedule["id"]).next_run_at = due
    with session_scope(settings.database_url) as third:
        assert claim(third, schedule["id"], due, now) is None  # disabled meanwhile


# ---- gate rules on known paired results ---------------------------------------------------------------------------
def _comparison(*rows):
    from aieval_server.schemas.paired import PairedComparison, PairedDataset, PairedSide

    return PairedComparison(a=PairedSide(evaluation_id=7, evaluation_name="baseline", model="m"),
                            b=PairedSide(evaluation_id=9, evaluation_name="tonight", model="m"), alpha=0.05,
                            datasets=[PairedDataset(**row) for row in rows])


def test_no_significant_drop_fails_on_a_significant_drop_only():
    from aieval_server.enums import GateStatus
    from aieval_server.schemas.schedules import NoSignificantDrop
    from aieval_server.services.gates import judge_no_significant_drop

    drop = {"dataset": "gsm8k", "comparable": True, "basis": "verdicts", "difference": 12.5, "p_value": 0.004,
            "p_holm": 0.008}
    gain = {"dataset": "mmlu", "comparable": True, "basis": "verdicts", "difference": -20.0, "p_value": 0.001,
            "p_holm": 0.002}
    elsewhere = {"dataset": "ceval", "comparable": False, "reason": "different sample selection"}
    result = judge_no_significant_drop(NoSignificantDrop(kind="no_significant_drop"),
                                       [_comparison(drop, gain, elsewhere)], None)
    assert result.status == GateStatus.failed
    assert result.reasons[0] == "m / gsm8k: 12.50 points worse than baseline #7 (Holm p = 0.008 < 0.05)"
    assert result.reasons[1] == "m / ceval: not compared (different sample selection)"
    strict = judge_no_significant_drop(NoSignificantDrop(kind="no_significant_drop", alpha=0.001),
                                       [_comparison(drop, gain)], None)
    assert strict.status == GateStatus.passed and strict.reasons[0].startswith("2 dataset(s) compared")
    nothing = judge_no_significant_drop(NoSignificantDrop(kind="no_significant_drop"), [_comparison(elsewhere)], None)
    assert nothing.status == GateStatus.not_applicable
    no_baseline = judge_no_significant_drop(NoSignificantDrop(kind="no_significant_drop"), None, "no baseline yet")
    assert no_baseline.status == GateStatus.not_applicable and no_baseline.reasons == ["no baseline yet"]


def test_min_score_and_the_overall_verdict():
    from aieval_server.enums import GateStatus
    from aieval_server.schemas.api import GateRuleResult
    from aieval_server.schemas.schedules import MinScore
    from aieval_server.services.gates import judge_min_score, overall

    scores = [{"model": "a", "dataset": "quiz", "dataset_abbr": "quiz", "metric": "accuracy", "value": 75.0},
              {"model": "b", "dataset": "quiz", "dataset_abbr": "quiz", "metric": "accuracy", "value": 40.0},
              {"model": "a", "dataset": "quiz", "dataset_abbr": "quiz", "metric": "f1", "value": 10.0}]
    both = judge_min_score(MinScore(kind="min_score", dataset="quiz", threshold=50), scores)
    assert both.status == GateStatus.failed
    assert both.reasons == ["a / quiz / accuracy: 75.00 ≥ 50", "b / quiz / accuracy: 40.00 < 50"]
    assert judge_min_score(MinScore(kind="min_score", dataset="quiz", threshold=40), scores).status == GateStatus.passed
    f1 = judge_min_score(MinScore(kind="min_score", dataset="quiz", metric="f1", threshold=5), scores)
    assert f1.status == GateStatus.failed and "no metric 'f1'" in f1.reasons[1]  # b has no f1
    missing = judge_min_score(MinScore(kind="min_score", dataset="gsm8k", threshold=1), scores)
    assert missing.status == GateStatus.failed and missing.reasons == ["the run has no score on dataset 'gsm8k'"]

    def result(status):
        return GateRuleResult(rule={}, status=status, reasons=[])

    assert overall([result(GateStatus.passed), result(GateStatus.not_applicable)]) == GateStatus.passed
    assert overall([result(GateStatus.passed), result(GateStatus.failed)]) == GateStatus.failed
    assert overall([result(GateStatus.not_applicable)]) == GateStatus.not_applicable
    assert overall([]) == GateStatus.not_applicable


def test_the_embedded_ticker_of_aieval_serve_submits_a_due_schedule(client, settings, monkeypatch):
    """`aieval serve` has no Celery beat: its thread (worker.start_schedule_ticker) ticks instead."""
    import threading
    import time

    from aieval_server.config import get_settings
    from aieval_server.db import session_scope
    from aieval_server.models import Schedule
    from aieval_server.worker import start_schedule_ticker

    schedule = _schedule(client)
    with session_scope(settings.database_url) as session:
        session.get(Schedule, schedule["id"]).next_run_at = datetime.now(UTC) - timedelta(seconds=1)
    monkeypatch.setenv("AIEVAL_SCHEDULE_TICK_S", "0.1")
    get_settings.cache_clear()  # the ticker reads the settings of the process, as `aieval serve` does
    stop = threading.Event()
    try:
        assert get_settings().database_url == settings.database_url
        start_schedule_ticker(stop)
        deadline = time.monotonic() + 15
        while client.get(f"/api/v1/schedules/{schedule['id']}").json()["last_evaluation_id"] is None:
            assert time.monotonic() < deadline, "the ticker did not submit the due schedule"
            time.sleep(0.1)
    finally:
        stop.set()
        get_settings.cache_clear()
    runs = client.get("/api/v1/evaluations", params={"q": "nightly"}).json()["items"]
    assert [run["schedule_id"] for run in runs] == [schedule["id"]]
