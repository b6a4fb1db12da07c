"""The suite itself: pytest (default import mode) cannot collect two test files with one basename,
and one such pair stops the whole `make test` at collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_file_basenames_are_unique():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], "duplicate test file names break collection"
