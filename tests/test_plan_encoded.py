"""The fast ingest paths give the same answers as the plain ones: line-list columns read dictionary-encoded
(Categorical) or as text, in one batch or many; ragged lines still reported with their line number; the raw copy
that runs beside the processing is complete before anything is published, and a failed copy publishes nothing."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import polars as pl
import pytest

from vigila.ingest import harmonise as hz
from vigila.ingest import pipeline, plan
from vigila.warehouse import read
from vigila.ingest.cast import select_fields
from vigila.config import load_source, source_from_dict
from vigila.ingest.readers import ROW, read_raw

from conftest import FIXTURES

COL = FIXTURES / "real" / "col_sivigila_malaria_complicada_2018"   # a real SIVIGILA line list (ages with a unit)


def _planned(source, frame, columns, batch_rows):
    lf = select_fields(frame, columns, source)
    return plan.run(lf, source, hz.Context.build(source, dt.date(2019, 1, 10)), batch_rows=batch_rows)


def _same(a: plan.Planned, b: plan.Planned) -> None:
    assert a.rows_read == b.rows_read
    key = [c for c in a.rows.columns if c != ROW]
    assert a.rows.sort(key).equals(b.rows.select(a.rows.columns).sort(key))
    assert a.errors.sort(a.errors.columns).equals(b.errors.sort(b.errors.columns))


def test_encoded_and_text_columns_in_one_or_many_batches_plan_alike():
    cfg = load_source(COL / "col_sivigila_malaria.yaml")
    table = read_raw(cfg.location, cfg)
    try:
        schema = table.frame.collect_schema()
        assert all(isinstance(schema[c], pl.Categorical) for c in cfg.mapped.values())   # a line list: encoded
        text = table.frame.with_columns(pl.col(pl.Categorical).cast(pl.Utf8))
        whole = _planned(cfg, table.frame, table.columns, 10**6)
        assert whole.errors.height and whole.rows.height          # some rows fail (EXTERIOR), most publish
        assert set(whole.errors["field"]) >= {"place"}
        _same(whole, _planned(cfg, text, table.columns, 10**6))  # text columns: encoded per batch by the plan
        _same(whole, _planned(cfg, table.frame, table.columns, 7))   # many batches: codes shared across batches
        _same(whole, _planned(cfg, text, table.columns, 7))          # ... or a fresh dictionary per batch
    finally:
        table.close()


def test_spilled_error_records_are_the_records_held_in_memory(tmp_path):
    """`plan.run(spill=...)` (what the ingest does): each batch's error records written to a file as it comes and
    read back lazily; the same records, in the same order, as those held in memory, on the real SIVIGILA list
    (issued mid-2018: its later weeks fail as in the future, 58 records over most batches)."""
    cfg = load_source(COL / "col_sivigila_malaria.yaml")
    table = read_raw(cfg.location, cfg)
    try:
        lf = select_fields(table.frame, table.columns, cfg)
        ctx = hz.Context.build(cfg, dt.date(2018, 6, 1))
        held = plan.run(lf, cfg, ctx, batch_rows=7)
        spilled = plan.run(lf, cfg, ctx, batch_rows=7, spill=tmp_path / "errors")
    finally:
        table.close()
    assert isinstance(spilled.errors, pl.LazyFrame) and isinstance(held.errors, pl.DataFrame)
    files = sorted((tmp_path / "errors").iterdir())
    assert len(files) > 1                                      # several batches had failing rows
    assert spilled.errors.collect().equals(held.errors) and held.errors.height
    _same(held, plan.Planned(spilled.rows, spilled.errors.collect(), spilled.rows_read, spilled.ledger))


def test_missing_values_and_ragged_lines_in_an_encoded_line_list(tmp_path):
    """Synthetic (the edge cases together): a blank and an NA-coded place, a short and a long line."""
    f = tmp_path / "ll.csv"
    f.write_text("fecha,depto,sexo\n2024-01-03,Lima,F\n2024-01-04,,M\n2024-01-05,ND,F\n2024-01-06,Lima\n"
                 "2024-01-06,Lima,F,extra\n2024-01-10,Cusco,M\n")
    cfg = source_from_dict({"id": "t_ll", "country": "PER", "reporter": {"institution": "x"}, "diseases": ["dengue"],
                            "geo_level": "admin1", "shape": "line_list", "location": str(f),
                            "columns": {"date": "fecha", "place": "depto", "sex": "sexo"},
                            "csv": {"na_values": ["ND"]}, "limits": {"max_quarantined_share": 1}})
    report, q = pipeline.check(cfg, f)
    got = sorted(q.select("row", "check", "value").rows())
    assert got == [(2, "unknown_place", "<missing>"), (3, "unknown_place", "<missing>"),
                   (4, "field_count", "2 fields, header has 3: 2024-01-06,Lima"),
                   (5, "field_count", "4 fields, header has 3: 2024-01-06,Lima,F,extra")]
    assert report["rows"] == {"read": 6, "published": 2, "quarantined": 4, "set_aside": 0}
    assert report["cases_published"] == 2


def test_raw_copy_beside_processing_is_complete_before_publishing(tmp_path):
    cfg = load_source(COL / "col_sivigila_malaria.yaml")
    wh = tmp_path / "wh"
    report = pipeline.ingest(cfg, cfg.location, wh, issue_date=dt.date(2019, 1, 10))
    raw = wh / report["file"]["key"]
    assert raw.read_bytes() == Path(cfg.location).read_bytes()
    assert (wh / f"raw/{cfg.id}/{report['file']['sha256']}.json").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("vigila-land")]   # nothing left copying


def test_a_failed_raw_copy_fails_the_run_and_publishes_nothing(tmp_path, monkeypatch):
    from vigila.warehouse.storage import Storage

    def broken(self, key, local):
        raise OSError("disk full")

    monkeypatch.setattr(Storage, "put_file", broken)
    cfg = load_source(COL / "col_sivigila_malaria.yaml")
    wh = tmp_path / "wh"
    with pytest.raises(OSError, match="disk full"):
        pipeline.ingest(cfg, cfg.location, wh, issue_date=dt.date(2019, 1, 10))
    assert not (wh / "datasets" / "cases_weekly").exists() and not list(wh.glob("raw/*/*.json"))
    assert not [t for t in threading.enumerate() if t.name.startswith("vigila-land")]
    with pytest.raises(FileNotFoundError):
        read.cases_weekly(wh).collect()
