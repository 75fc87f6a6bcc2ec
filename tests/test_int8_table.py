"""The int8 search's trial table shows every trial's full name, wrapped in its column, so no two rows of
different trials look the same (`mnist-edge quantize --search` used to cut names at 34 characters)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_edge.int8.table import NAME_WIDTH, trial_rows, wrap_name

ROOT = Path(__file__).resolve().parents[1]
FMT = "  {:<34} {:>6} {:>8} {:>8}  {:<22} {:<22}"  # the quantize command's trial row


def test_a_name_is_wrapped_after_a_plus_and_every_change_stays_whole():
    name = "first-last-float+conv-gemm-only+per-tensor+relu-before-pool+nhwc-flatten+pad-channels-8+entropy"
    lines = wrap_name(name)
    assert lines == ["first-last-float+conv-gemm-only+", "  per-tensor+relu-before-pool+",
                     "  nhwc-flatten+pad-channels-8+", "  entropy"]
    assert all(len(line) <= NAME_WIDTH for line in lines)
    assert "".join(line.strip() for line in lines) == name
    assert wrap_name("base") == ["base"] and wrap_name("") == [""]
    assert wrap_name("x" * 10, width=4) == ["xxxx", "  xx", "  xx", "  xx"]  # no '+': cut where lines end
    with pytest.raises(ValueError):
        wrap_name("a+b", width=2)


def test_rows_carry_the_cells_on_the_first_line_and_the_rest_of_the_name_below():
    cells = ("pass", "99.87%", "+0.01", "0.61x", "0.40x")
    rows = trial_rows(FMT, "first-last-float+per-tensor+percentile-99.999", *cells)
    assert rows[0] == FMT.format("first-last-float+per-tensor+", *cells)
    assert rows[1:] == ["    percentile-99.999"]
    assert trial_rows(FMT, "base", "FAIL", "-", "-", "-", "-") == [FMT.format("base", "FAIL", "-", "-", "-", "-")]


def test_every_committed_search_shows_distinct_full_names():
    """Each exported/NAME/int8_recipe.json's trials through the rows: every name readable in full, which a cut
    at the column's width was not (cnn_small's names reach 100 characters)."""
    longest = 0
    for path in sorted((ROOT / "exported").glob("*/int8_recipe.json")):
        trials = json.loads(path.read_text())["trials"]
        for t in trials:
            rows = trial_rows(FMT, t["name"], "pass", "-", "-", "-", "-")
            assert "".join(row[2:2 + NAME_WIDTH].strip() for row in rows) == t["name"], path
            longest = max(longest, len(t["name"]))
    assert longest > NAME_WIDTH  # the case that made rows look identical is covered
