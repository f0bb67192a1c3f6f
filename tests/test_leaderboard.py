"""Leaderboard CSV round trip, merging over seeds, and Markdown rendering with reported rows."""
import csv
import math

import pytest

from lrfacebench.bench.leaderboard import COLUMNS, Row, aggregate, read_rows, render_markdown, write_rows


def _row(method, value, dataset="lr-pipa", source="reproduced", run="r1", **kw):
    return Row(table="table1", dataset=dataset, split="test", method=method, variant="default",
               metric="fid", value=value, source=source, run_id=run, n_images=131, **kw)


def test_round_trip_keeps_every_column(tmp_path):
    rows = [_row("cr", 23.5, protocol="clean;inception-2015-12-05"), _row("lrgan", 29.8, std=0.5)]
    write_rows(tmp_path / "lb.csv", rows)
    with open(tmp_path / "lb.csv") as f:
        assert next(csv.reader(f)) == COLUMNS
    back = read_rows(tmp_path / "lb.csv")
    assert [(r.method, r.value, r.protocol) for r in back] == [
        ("cr", 23.5, "clean;inception-2015-12-05"), ("lrgan", 29.8, "")]
    assert math.isnan(back[0].std) and back[1].std == 0.5


def test_read_rejects_a_csv_that_is_not_a_leaderboard(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_rows(tmp_path / "x.csv")


def test_merge_averages_seeds_but_never_paper_rows():
    rows = [_row("cr", 20.0, run="s0"), _row("cr", 24.0, run="s1"),
            _row("cr", 23.09, source="paper"), _row("cr", 23.09, source="paper")]
    merged = {r.source: r for r in aggregate(rows)}
    assert merged["reproduced"].value == 22.0
    assert merged["reproduced"].std == pytest.approx(math.sqrt(8))
    assert merged["reproduced"].n_runs == 2 and merged["reproduced"].run_id == "s0;s1"
    assert merged["paper"].value == 23.09 and merged["paper"].n_runs == 1


def test_markdown_bolds_our_best_by_direction_and_labels_reported_values():
    rows = [_row("cr", 30.0), _row("vdsr", 90.0), _row("cr", 23.09, dataset="lr-pipa", source="paper")]
    md = render_markdown(rows, {"table1": "Table 1"})
    assert "lower is better" in md
    assert "| cr | **30.00** |" in md
    assert "| vdsr | 90.00 |" in md
    assert "cr *(reported in paper)* | 23.09 |" in md  # reported value shown, never bold
    higher = [Row(**{**r.__dict__, "higher_is_better": True}) for r in rows]
    assert "| vdsr | **90.00** |" in render_markdown(higher)
