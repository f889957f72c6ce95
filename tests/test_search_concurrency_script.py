"""benchmarks/search_concurrency.py at a tiny size: both thread policies measured for each client count, written as
JSON and Markdown."""

import json

import pytest
import search_concurrency


pytest.importorskip("faiss")


@pytest.mark.slow
def test_concurrency_benchmark_at_tiny_size(tmp_path):
    report = search_concurrency.main(
        ["--rows", "20000", "--clients", "1", "2", "--seconds", "0.5", "--out", str(tmp_path), "--note", "a test"]
    )
    saved = json.loads((tmp_path / "search_concurrency.json").read_text())
    assert saved["rows_measured"] == report["rows_measured"] and saved["factory"].startswith("IVF")
    assert [row["clients"] for row in saved["rows_measured"]] == [1, 2]
    for row in saved["rows_measured"]:
        assert all(row[policy] > 0 for policy in search_concurrency.POLICIES)
    assert "(a test)" in (tmp_path / "search_concurrency.md").read_text()
