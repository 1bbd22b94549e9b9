"""The documentation cannot rot silently: every relative link in the READMEs and docs/*.md leads to a file that exists
(and, for a link into a Markdown file, to a heading it has), and every file path the text names
(`apps/server/start_celery_worker.py`, `services/runs.py`, `configs/deploy/nginx.conf`...) is a file of the checkout.

A path is found under the repository root or under one of the folders the docs abbreviate from
(`services/runs.py` is apps/server/aieval_server/services/runs.py, `i18n/en.ts` is apps/web/src/i18n/en.ts), or in the
installed OpenCompass package (`opencompass/utils/datasets_info.py`). Placeholders (`<data dir>/jobs/<id>/run.log`),
URLs and absolute paths are not files of the checkout and are not checked."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The READMEs and docs/, which the README links to (apps/server/README.md: the server's settings and debugging).
DOCUMENTS = [ROOT / "README.md", ROOT / "apps/server/README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Where a shortened path may start: the repository, the two Python packages and their folders, the web app.
SHORTHAND_ROOTS = [ROOT, ROOT / "apps", ROOT / "apps/server", ROOT / "apps/engine", ROOT / "apps/server/aieval_server",
                   ROOT / "apps/engine/aieval_engine", ROOT / "apps/web", ROOT / "apps/web/src"]
# File kinds the docs name as files of the checkout (not `run.log` or `.jsonl`, which are outputs of a run).
CHECKED_SUFFIXES = ("py", "md", "sh", "ts", "vue", "yaml", "yml", "json", "conf", "toml", "service", "dockerfile",
                    "mako", "example", "tpl")
SUFFIX_ALTERNATIVES = "|".join(CHECKED_SUFFIXES)
PATH_TOKEN = re.compile(rf"(?:\./)?\.?[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.-]+)+\.(?:{SUFFIX_ALTERNATIVES})")
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PLACEHOLDER = re.compile(r"[<>{}*$…~]|\.\.\.|://")


def _opencompass_parent() -> Path | None:
    spec = importlib.util.find_spec("opencompass")  # finds the package without importing it (seconds)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent


def _without_links(text: str) -> str:
    """The text with link targets removed (checked separately, and URLs are not paths of the checkout)."""
    return MARKDOWN_LINK.sub(lambda m: m.group(0).split("](")[0] + "]", text)


def path_references(text: str) -> set[str]:
    """Every token of the text that names a file by a relative path with a directory part."""
    found = set()
    for raw in re.split(r"[\s`|,;()\[\]\"']+", _without_links(text)):
        token = raw.rstrip(".:!?")
        if not token or PLACEHOLDER.search(token) or token.startswith(("/", "-")):
            continue
        if PATH_TOKEN.fullmatch(token):
            found.add(token.removeprefix("./"))
    return found


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped (letters of any script kept), spaces to -."""
    kept = "".join(c for c in heading.strip().lower()
                   if c in " -_" or unicodedata.category(c)[0] in ("L", "N", "M"))
    return kept.replace(" ", "-")


def anchors_of(markdown: Path) -> set[str]:
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    in_fence = False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if in_fence:
            continue
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = github_anchor(match.group(1))
            n = counts.get(base, 0)
            counts[base] = n + 1
            anchors.add(base if n == 0 else f"{base}-{n}")
    return anchors


def test_the_checks_see_what_they_should():
    text = ("Run `apps/server/start_celery_worker.py --queues api`, read docs/OPERATIONS.md and .vscode/launch.json; not "
            "`<data dir>/jobs/<id>/run.log`, http://host/x.py, /etc/nginx/conf.d/aieval.conf or "
            "[a link](docs/SECURITY.md).")
    assert path_references(text) == {"apps/server/start_celery_worker.py", "docs/OPERATIONS.md", ".vscode/launch.json"}
    assert github_anchor("Tasks on a Slurm cluster") == "tasks-on-a-slurm-cluster"
    assert github_anchor("FAQ / 常见问题") == "faq--常见问题"
    assert github_anchor("Prometheus: `GET /metrics`") == "prometheus-get-metrics"
    assert github_anchor("Engine (`apps/engine/aieval_engine`)") == "engine-appsengineaieval_engine"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(document: Path):
    broken = []
    for target in MARKDOWN_LINK.findall(document.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (document.parent / file_part).resolve() if file_part else document
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors_of(destination):
            broken.append(f"{target}: {destination.name} has no heading with the anchor #{anchor}")
    assert not broken, f"{document.relative_to(ROOT)}: {broken}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_path_named_exists(document: Path):
    roots = list(SHORTHAND_ROOTS)
    opencompass_parent = _opencompass_parent()
    if opencompass_parent is not None:
        roots.append(opencompass_parent)
    missing = sorted(reference for reference in path_references(document.read_text(encoding="utf-8"))
                     if not any((root / reference).exists() for root in roots))
    assert not missing, f"{document.relative_to(ROOT)} names files that do not exist: {missing}"
