"""The test tree itself: pytest imports test modules by their file name (no packages), so two test files with the
same name in different folders stop the whole collection ("import file mismatch") before any test runs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]


def test_every_test_module_has_a_name_of_its_own():
    places: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        if "node_modules" not in path.parts:
            places[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in places.items() if len(paths) > 1}
    assert not clashes, f"rename one of each: {clashes}"
