"""aieval_evaluation_duration_seconds covers the whole job: from its claim (started_at) to its outcome, also when the
outcome is written by a recorder that began much later, as the merge of a fanned-out job's parts does
(services/fanout._merge: a RunRecorder made when the last part ended)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prometheus_client.parser import text_string_to_metric_families

CLAIMED_AGO_S = 90


def _duration(client, outcome: str) -> tuple[float | None, float | None]:
    scrape = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(client.get("/metrics").text) for s in family.samples}
    labels = (("outcome", outcome),)
    return (scrape.get(("aieval_evaluation_duration_seconds_count", labels)),
            scrape.get(("aieval_evaluation_duration_seconds_sum", labels)))


def test_the_outcome_observes_the_time_since_the_job_was_claimed(client, settings):
    from aieval_server import metrics
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation
    from aieval_server.services.events import Publisher
    from aieval_server.services.run_recorder import RunRecorder

    metrics.configure(settings)
    token = "host:1:merge"
    with session_scope(settings.database_url) as session:
        job = Evaluation(name="fanned out", params={}, queue="local", status="running", worker=token,
                         started_at=datetime.now(timezone.utc) - timedelta(seconds=CLAIMED_AGO_S),
                         heartbeat_at=datetime.now(timezone.utc))
        session.add(job)
        session.flush()
        job_id = job.id
    assert _duration(client, "succeeded") == (None, None)

    merge = RunRecorder(settings, job_id, token, Publisher(settings))  # begins now, as the merge's recorder does
    merge.finish(status="succeeded", error=None, scores=[], extra={})

    count, total = _duration(client, "succeeded")
    assert count == 1
    assert CLAIMED_AGO_S <= total < CLAIMED_AGO_S + 60, total
    with session_scope(settings.database_url) as session:
        assert session.get(Evaluation, job_id).status == "succeeded"

    # A recorder whose job was taken over writes nothing and observes nothing.
    stale = RunRecorder(settings, job_id, "host:2:stale", Publisher(settings))
    stale.finish(status="failed", error="late", scores=[], extra={})
    assert _duration(client, "failed") == (None, None)
    assert _duration(client, "succeeded")[0] == 1
