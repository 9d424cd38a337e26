"""Parsing real-world files: encodings, delimiters, decimal commas, XLSX/JSON/Parquet, broken files."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from vigila.ingest import pipeline
from vigila.config import source_from_dict
from vigila.ingest.readers import ReadError, read_raw

CSV = "departamento;semana;año;casos\nApurímac;1;2023;1.234,0\nLoreto;1;2023;12\nSan Martín;2;2023;7\n"


def src(**over):
    base = {"id": "t_src", "country": "PER", "reporter": {"institution": "x"}, "diseases": ["dengue"],
            "geo_level": "admin1",
            "columns": {"place": "departamento", "epi_year": "año", "epi_week": "semana", "cases": "casos"}}
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return source_from_dict(base)


def check(tmp_path, data: bytes, name="r.csv", **over):
    p = tmp_path / name
    p.write_bytes(data)
    return pipeline.check(src(**over), p)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252"])
def test_any_common_encoding_gives_the_same_rows(tmp_path, encoding):
    report, q = check(tmp_path, CSV.encode(encoding), csv={"decimal": ",", "thousands": "."})
    assert report["rows_read"] == 3 and report["rows_quarantined"] == 0
    assert report["cases_published"] == 1234 + 12 + 7


def test_declared_utf8_but_latin1_is_a_clear_error(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(CSV.encode("latin-1"))
    with pytest.raises(ReadError, match=r"not valid UTF-8 \(byte \d+, line 1\); set csv.encoding"):
        read_raw(p, src(csv={"encoding": "utf-8"}))


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path, sep):
    text = CSV.replace("1.234,0", "1234").replace(";", sep)
    report, _ = check(tmp_path, text.encode())
    assert report["file"]["delimiter"] == sep and report["cases_published"] == 1253


def test_decimal_comma_with_fraction_is_not_an_integer(tmp_path):
    report, q = check(tmp_path, CSV.replace("12\n", "12,5\n").encode(), csv={"decimal": ",", "thousands": "."})
    assert q.select("row", "column", "check", "value").rows() == [(2, "casos", "type:int64", "12,5")]
    assert report["cases_published"] == 1234 + 7   # the other rows are published


def test_xlsx_json_parquet_and_gzip_read_like_csv(tmp_path):
    df = pl.read_csv(CSV.replace("1.234,0", "1234").encode(), separator=";")
    df.write_excel(tmp_path / "r.xlsx")
    (tmp_path / "r.json").write_text(json.dumps({"data": {"rows": df.to_dicts()}}))
    df.write_parquet(tmp_path / "r.parquet")
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(CSV.replace("1.234,0", "1234").encode()))
    for name, over in [("r.xlsx", {}), ("r.json", {"csv": {"json_records_path": "data.rows"}}), ("r.parquet", {}),
                       ("r.csv.gz", {})]:
        report, q = pipeline.check(src(**over), tmp_path / name)
        assert (name, report["rows_read"], report["cases_published"], q.height) == (name, 3, 1253, 0)


@pytest.mark.parametrize("data, words", [
    (b"", "the file is empty"),
    (b"departamento;semana;a\xc3\xb1o;casos\n", "header only, no data rows"),
    (bytes(range(256)) * 64, "binary content"),
    (b"departamento;semana;a\xc3\xb1o;casos;casos\n", "duplicate column name 'casos'"),
    (b"departamento;semana;casos\nLoreto;1;2\n", "column 'año' (columns.epi_year) is not in the file"),
    (b"[1, 2", "malformed JSON"),
])
def test_unreadable_files_give_one_clear_line(tmp_path, data, words):
    name = "r.json" if data.startswith(b"[") else "r.csv"
    with pytest.raises(ReadError) as e:
        check(tmp_path, data, name=name)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_2gb_file_claimed_as_csv_is_refused_before_reading(tmp_path):
    p = tmp_path / "huge.csv"
    with p.open("wb") as f:  # sparse: 2 GiB on paper, nothing on disk
        f.truncate(2 * 2**30)
    with pytest.raises(ReadError, match=r"2.0 GiB is over the source limit of 1.0 GiB"):
        read_raw(p, src(limits={"max_bytes": 2**30}))
    with pytest.raises(ReadError, match="binary content"):  # and under the limit, NULs are not CSV
        read_raw(p, src())


def test_short_and_long_rows_are_quarantined_not_padded(tmp_path):
    """The short row and the long one hold as many delimiters together as two good rows: the byte counts
    cannot see them, the strict parse meets the long one and the file is read again, row by row."""
    text = "departamento;semana;año;casos\nLoreto;1;2023;12\nLoreto;2;2023\nLoreto;3;2023;5;99\nLoreto;4;2023;6\n"
    (tmp_path / "r.csv").write_text(text)
    assert read_raw(tmp_path / "r.csv", src()).recount is not None      # so the strict path is what runs below
    report, q = check(tmp_path, text.encode())
    assert q.filter(pl.col("check") == "field_count")["row"].to_list() == [2, 3]
    assert report["cases_published"] == 18    # rows 1 and 4


@pytest.mark.parametrize("shape, header, short, long", [
    ("line_list", "fecha,depto,sexo,obs", "2024-01-06,Lima,F", "2024-01-06,Lima,Cusco,F,b"),   # a field shifted
    ("weekly_counts", "departamento,semana,año,casos,obs", "Loreto,2,2023,7", "Loreto,3,2023,5,x,99"),
])
def test_a_short_and_a_long_row_beside_an_unread_column_are_quarantined(tmp_path, shape, header, short, long):
    """The byte counts cannot see the pair; polars checks the field count only when it parses every column: a line
    list reads its mapped columns (so it is never parsed strictly), a count file hashes whole lines (so it is)."""
    good = {"line_list": ["2024-01-03,Lima,F,a", "2024-01-10,Cusco,M,c"],
            "weekly_counts": ["Loreto,1,2023,12,a", "Loreto,4,2023,6,b"]}[shape]
    f = tmp_path / "r.csv"
    f.write_text("\n".join([header, good[0], short, long, good[1]]) + "\n")
    if shape == "line_list":
        cfg = source_from_dict({"id": "t_ll", "country": "PER", "reporter": {"institution": "x"}, "diseases": ["dengue"],
                                "geo_level": "admin1", "shape": "line_list", "location": str(f),
                                "columns": {"date": "fecha", "place": "depto", "sex": "sexo"},
                                "limits": {"max_quarantined_share": 1}})
    else:
        cfg = src(location=str(f), limits={"max_quarantined_share": 1})
    table = read_raw(f, cfg)
    try:
        assert (table.recount is not None) is (shape != "line_list")
    finally:
        table.close()
    report, q = pipeline.check(cfg, f)
    assert q.filter(pl.col("check") == "field_count")["row"].to_list() == [2, 3]
    assert report["rows"] == {"read": 4, "published": 2, "quarantined": 2, "set_aside": 0}
    assert report["cases_published"] == (2 if shape == "line_list" else 18)


def test_blank_lines_before_the_header_are_not_rows(tmp_path):
    """polars skips them when it looks for the header: the field-count pass numbers rows from the header too."""
    text = "\r\n\ndepartamento,semana,año,casos\r\nLoreto,1,2023,12\r\nLoreto,2,2023,7,99\r\nLoreto,3,2023,5\r\n"
    report, q = check(tmp_path, text.encode())
    assert q.select("row", "check").rows() == [(2, "field_count")]
    assert report["cases_published"] == 17


@pytest.mark.parametrize("text, strict", [
    ("departamento;semana;año;casos\r\nLoreto;1;2023;12\r\nLoreto;2;2023;3", True),      # no final newline
    ("departamento;semana;año;casos\nLoreto;1;2023;12\nLoreto;2;2023\n", False),          # short row
    ('departamento;semana;año;casos\n"Loreto";1;2023;12\n', False),                      # quotes: counted per row
    ("departamento;semana;año;casos\nLoreto;1;2023;12\n\nLoreto;2;2023;3\n", False),      # blank line
])
def test_a_file_is_parsed_strictly_only_when_its_byte_counts_rule_out_ragged_rows(tmp_path, text, strict):
    (tmp_path / "r.csv").write_text(text)
    table = read_raw(tmp_path / "r.csv", src())
    try:
        assert (table.recount is not None) is strict
    finally:
        table.close()


def test_a_blank_line_is_a_row_and_the_rows_after_it_keep_their_numbers(tmp_path):
    """polars reads a blank line as a row of nulls: the field-count pass numbers rows the same way, so the short
    row after it is the one quarantined (numbering without the blank line put the mark on the row before)."""
    text = "departamento;semana;año;casos\nLoreto;1;2023;12\n\nLoreto;2;2023;3\nLoreto;3;2023\nLoreto;4;2023;6\n"
    report, q = check(tmp_path, text.encode())
    assert q.filter(pl.col("check") == "field_count")["row"].to_list() == [4]
    assert set(q.filter(pl.col("row") == 2)["check"]) == {"unknown_place", "missing_epi_week", "not_nullable"}
    assert report["rows"] == {"read": 5, "published": 3, "quarantined": 2, "set_aside": 0}
    assert report["cases_published"] == 12 + 3 + 6
