"""Cross-tab layouts (vigila/ingest/layouts/crosstab.py) on a real TabNet export and an XLSX with merged headers: every
cell accounted (rows and cases read = published + quarantined + set aside), Total columns, Total rows and
subtotal rows set aside and never double counted, the published total equal to the file's own Total, and every
quarantined or set-aside cell located by the file's line and its column header."""

from __future__ import annotations

import csv
import json

import polars as pl
import pytest
import yaml

from vigila.ingest import pipeline
from vigila.warehouse import read
from vigila.config import ConfigError, load_source, source_from_dict
from vigila.ingest.readers import ReadError

from conftest import FIXTURES
from test_flow import run_cli

TABNET = FIXTURES / "real" / "bra_tabnet_sinan_dengue_mg"
TABNET_CSV = TABNET / "dengue_2020_mg_tabnet_extract.csv"
TABNET_YAML = TABNET / "bra_tabnet_dengue_mg.yaml"
XLSX = FIXTURES / "real" / "bra_crosstab_xlsx_merged"
XLSX_YAML = XLSX / "bra_crosstab_xlsx_merged.yaml"


def balanced(report: dict) -> None:
    for what in ("rows", "cases"):
        c = report[what]
        assert c["read"] == c["published"] + c["quarantined"] + c["set_aside"], (what, c)
        assert c.get("unaccounted", 0) == 0


def tabnet_lines() -> list[list[str]]:
    """The file as its publisher wrote it, read independently of Vigila (Latin-1, `;`)."""
    return list(csv.reader(TABNET_CSV.open(encoding="latin-1", newline=""), delimiter=";"))


def file_total_row() -> dict[int, int]:
    """The file's own Total row: week -> count, and 0 -> the grand total (its Total column)."""
    lines = tabnet_lines()
    header = next(r for r in lines if r and r[0].startswith("Reg Sa"))
    total = next(r for r in lines if r and r[0] == "Total")
    out = {int(h.split()[1]): (0 if v == "-" else int(v)) for h, v in zip(header[1:-1], total[1:-1])}
    return {**out, 0: int(total[-1])}


def config(path=TABNET_YAML, layout: dict | None = None, **over) -> dict:
    data = yaml.safe_load(path.read_text())
    data["location"] = None
    if layout:
        data["layout"] = {**data["layout"], **layout}
    data.update(over)
    return data


# --------------------------------------------------------------------------- the real TabNet export


def test_tabnet_every_cell_accounted_and_the_published_total_is_the_files_own():
    report, q = pipeline.check(load_source(TABNET_YAML), TABNET_CSV)
    balanced(report)
    assert report["status"] == "checked" and report["file"]["encoding"] == "latin-1"
    # 40 label rows (3 health regions, 36 municipalities, the Total row) x 54 columns (53 weeks + Total)
    assert report["rows"] == {"read": 40 * 54, "published": 36 * 53, "quarantined": 0, "set_aside": 4 * 54 + 36}
    totals = file_total_row()
    # read: the municipalities, the regions and the Total row, each with its Total column = 6 x the grand total
    assert report["cases"]["read"] == 6 * totals[0] == 31_500
    assert report["cases"]["published"] == totals[0] == 5_250                   # the file's own grand total
    assert report["cases"]["set_aside"] == 5 * totals[0]                        # never double counted
    by_check = {(c["check"], c["column"]): c for c in report["by_check"]}
    level = by_check[("crosstab_level", "Reg Saúde (CIR)/Municíp Res")]
    assert (level["rows"], level["cases"], level["first_row"]) == (4 * 54, 4 * totals[0], 5)   # line 5: the first region
    assert level["example"] == "region: 31001 Alfenas/Machado"
    total_col = by_check[("crosstab_total", "Total")]
    assert (total_col["rows"], total_col["cases"], total_col["first_row"]) == (36, totals[0], 6)
    assert set(q["severity"]) == {"set_aside"}
    notes = " ".join(report["notes"])
    assert "40 of 40 rows' weeks add up to their Total" in notes
    assert "Total row (line 44): equals the sum of the municipality rows in every column" in notes
    assert "footnotes from line 46" in notes


def test_tabnet_published_weeks_equal_the_total_row_week_by_week(tmp_path):
    wh = tmp_path / "wh"
    report = pipeline.ingest(load_source(TABNET_YAML), TABNET_CSV, wh, run_id="r1")
    balanced(report)
    weekly = read.cases_weekly(wh).collect().sort("epi_week")
    assert set(weekly["geo_code"]) == {"BR-MG"} and set(weekly["epi_year"]) == {2020} and weekly.height == 53
    totals = file_total_row()
    assert dict(zip(weekly["epi_week"], weekly["cases"])) == {w: c for w, c in totals.items() if w}


@pytest.mark.parametrize("level", ["total", "region", "municipality"])
def test_any_level_may_be_published_and_each_gives_the_same_weeks(level):
    """The Total row, the health regions or the municipalities: one level is published, the others set aside."""
    report, q = pipeline.check(source_from_dict(config(layout={"publish": level})), TABNET_CSV)
    balanced(report)
    assert report["cases"]["published"] == 5_250 and report["cases"]["read"] == 31_500
    published_rows = {"total": 1, "region": 3, "municipality": 36}[level]
    assert report["rows"]["published"] == published_rows * 53
    aside = q.filter(pl.col("check") == "crosstab_level")
    assert aside["value"].str.starts_with(level).sum() == 0                     # the published level is never set aside


def test_quarantine_and_report_point_at_the_files_line_and_column(tmp_path):
    """Synthetic edits of the real file (edge cases it lacks): a not-reported marker, an unlabelled row and a
    cell that is not a number, each found by the team at its line and column."""
    lines = TABNET_CSV.read_bytes().decode("latin-1").split("\n")
    assert lines[5].startswith('".....  AREADO";-;-;-;1;-')
    cells = lines[5].split(";")
    cells[5] = "..."                                                            # AREADO, Semana 05: not reported
    cells[9] = "x2"                                                             # AREADO, Semana 09: unreadable
    lines[5] = ";".join(cells)
    lines[7] = lines[7].replace(".....  DIVISA NOVA", "DIVISA NOVA (sem nível)")   # matches no row pattern
    edited = tmp_path / "tabnet.csv"
    edited.write_bytes("\n".join(lines).encode("latin-1"))
    report, q = pipeline.check(source_from_dict(config(limits={"max_bytes": 10**9, "max_quarantined_share": 1})), edited)
    balanced(report)
    marker = q.filter(pl.col("check") == "not_reported").row(0, named=True)
    assert (marker["row"], marker["column"], marker["value"], marker["severity"]) == (6, "Semana 05", "...", "error")
    bad = q.filter(pl.col("check") == "type:int64").row(0, named=True)
    assert (bad["row"], bad["column"], bad["value"], bad["cases"]) == (6, "Semana 09", "x2", None)
    unknown = q.filter(pl.col("check") == "crosstab_unknown_row")
    assert set(unknown["row"]) == {8} and unknown.height == 54
    assert set(unknown["column"]) == {"Reg Saúde (CIR)/Municíp Res"} and unknown["cases"].sum() == 2 * 9
    assert report["rows"]["quarantined"] == 54 + 2 and report["cases"]["quarantined"] == 2 * 9
    # the published total is short of the file's own by what was quarantined: DIVISA NOVA's 9 cases and the 1 case
    # of AREADO's unreadable cell (read as no count); AREADO's "..." stood where TabNet had "-"
    assert report["cases"]["published"] == 5_250 - 9 - 1 and report["rows_without_count"] == 2
    notes = " ".join(report["notes"])
    assert "39 of 39 rows' weeks add up" in notes                                # AREADO's weeks cannot be added up
    assert "Total row (line 44): differs from the sum of the municipality rows" in notes


def test_whole_cli_check_and_ingest_on_the_tabnet_config(tmp_path):
    res = run_cli("check", str(TABNET_YAML))
    assert res.returncode == 0, res.stderr
    assert "crosstab_level" in res.stdout and "Total column: 40 of 40" in res.stdout
    wh = tmp_path / "wh"
    res = run_cli("ingest", str(TABNET_YAML), "--warehouse", str(wh), "--quiet")
    assert res.returncode == 0, res.stderr
    report = json.loads(next((wh / "reports" / "bra_tabnet_dengue_mg").glob("2*.json")).read_text())
    balanced(report)
    assert report["status"] == "published" and report["cases_published"] == 5_250
    q = read.quarantine(wh).collect()
    assert q.height == 4 * 54 + 36 and set(q["severity"]) == {"set_aside"}
    assert set(q.filter(pl.col("check") == "crosstab_total")["column"]) == {"Total"}
    assert q.filter(pl.col("check") == "crosstab_level")["row"].sort().unique().to_list() == [5, 22, 31, 44]
    assert int(q["cases"].sum()) == report["cases"]["set_aside"]


# --------------------------------------------------------------------------- XLSX with merged header cells


def test_xlsx_merged_headers_give_year_and_week_and_every_cell_is_accounted():
    report, q = pipeline.check(load_source(XLSX_YAML), XLSX / "crosstab_merged_header.xlsx")
    balanced(report)
    lines = tabnet_lines()
    region = next(r for r in lines if r and r[0] == "31003 Itajubá")
    region_total = int(region[-1])
    assert report["cases"]["published"] == region_total == 1_393           # the region's own row, as published
    assert report["rows"] == {"read": 14 * 54, "published": 12 * 53, "quarantined": 0, "set_aside": 2 * 54 + 12}
    assert report["cases"]["read"] == 6 * region_total
    level = q.filter(pl.col("check") == "crosstab_level")
    assert sorted(set(level["row"])) == [5, 18]                              # sheet rows: the region and the Total
    notes = " ".join(report["notes"])
    assert "header at line 3" in notes and "14 of 14 rows' weeks add up" in notes and "Total row (line 18): equals" in notes


def test_xlsx_weeks_carry_the_year_of_the_merged_cell(tmp_path):
    wh = tmp_path / "wh"
    pipeline.ingest(load_source(XLSX_YAML), XLSX / "crosstab_merged_header.xlsx", wh, run_id="x1")
    weekly = read.cases_weekly(wh).collect().sort("epi_week")
    region = next(r for r in tabnet_lines() if r and r[0] == "31003 Itajubá")
    assert set(weekly["epi_year"]) == {2020} and weekly.height == 53
    assert weekly["cases"].to_list() == [0 if v == "-" else int(v) for v in region[1:-1]]


# --------------------------------------------------------------------------- edge cases the real files lack


MONTHS = ("Casos por mes y semana - Peru\n"
          "Departamento;Semana 1;Semana 2;Enero;Total\n"
          "Cusco;3;-;3;6\n"
          "Puno;..;1;1;1\n"
          "Total;3;1;4;7\n"
          "Fuente: sintético\n")


def months_config(**layout) -> dict:
    return {"id": "per_months", "country": "PER", "reporter": {"institution": "x"}, "diseases": ["dengue"],
            "geo_level": "admin1", "issue_date": {"fixed": "2024-06-01"},
            "columns": {"place": "Departamento", "epi_year": "year", "epi_week": "week", "cases": "value"},
            "layout": {"kind": "crosstab", "title_fields": [], "rows": [{"level": "total", "pattern": "^Total$"},
                                                                       {"level": "place", "pattern": "."}],
                       "publish": "place", "columns": [{"kind": "week", "pattern": r"^Semana (?P<week>\d+)$"},
                                                       {"kind": "total", "pattern": "^Total$"},
                                                       {"kind": "other", "pattern": "^(Enero|Febrero)$"}],
                       "zero_markers": ["-"], "missing_markers": [".."], **layout},
            "limits": {"max_bytes": 10**9, "max_quarantined_share": 1}}


def test_month_columns_set_aside_markers_read_and_totals_compared(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(MONTHS.replace("Casos por mes", "Casos 2024 por mes"))
    cfg = months_config(title_fields=[r"Casos (?P<year>\d{4})"])
    report, q = pipeline.check(source_from_dict(cfg), path)
    balanced(report)
    assert report["rows"] == {"read": 12, "published": 3, "quarantined": 1, "set_aside": 8}
    assert report["cases"] == {**report["cases"], "read": 3 + 3 + 6 + 1 + 1 + 1 + 3 + 1 + 4 + 7, "published": 4,
                               "quarantined": 0}
    month = q.filter(pl.col("check") == "crosstab_not_weekly")
    assert month.height == 2 and set(month["column"]) == {"Enero"} and month["cases"].to_list() == [3, 1]
    missing = q.filter(pl.col("check") == "not_reported").row(0, named=True)
    assert (missing["row"], missing["column"], missing["value"]) == (4, "Semana 1", "..")
    assert report["rows_without_count"] == 1
    notes = " ".join(report["notes"])
    assert "0 of 2 rows' weeks add up" in notes and "'Puno'" not in notes    # Puno has a missing week: not compared
    assert "line 3 'Cusco': weeks 3, Total 6" in notes                          # its month is in its Total


def test_a_file_the_layout_does_not_describe_is_refused_in_one_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(MONTHS)
    with pytest.raises(ReadError, match="title_fields"):                      # no year anywhere above the header
        pipeline.check(source_from_dict(months_config(title_fields=[r"Casos (?P<year>\d{4})"])), path)
    path.write_text(MONTHS.replace("Enero", "Marzo").replace("Casos por", "Casos 2024 por"))
    with pytest.raises(ReadError, match="column 4 'Marzo' .* matches no layout.columns pattern"):
        pipeline.check(source_from_dict(months_config(title_fields=[r"Casos (?P<year>\d{4})"])), path)
    path.write_text("just;a;table\n1;2;3\n")
    with pytest.raises(ReadError, match="no header found"):
        pipeline.check(source_from_dict(months_config()), path)


def test_layout_config_errors_name_the_key(tmp_path):
    bad = config(layout={"publish": "state"})
    yml = tmp_path / "bad.yaml"
    yml.write_text(yaml.safe_dump({**bad, "location": str(TABNET_CSV)}, allow_unicode=True))
    with pytest.raises(ConfigError, match="layout.*'state' is not one of rows: total, region, municipality"):
        load_source(yml)
    with pytest.raises(ConfigError, match="unknown key 'layout.zero_marker'"):
        yml.write_text(yaml.safe_dump({**config(layout={"zero_marker": ["-"]}), "location": str(TABNET_CSV)},
                                      allow_unicode=True))
        load_source(yml)


def test_every_check_a_crosstab_raises_is_in_the_catalogue(tmp_path):
    from vigila import configdoc

    known = {name for stage in configdoc.checks().values() for name in stage}
    path = tmp_path / "m.csv"
    path.write_text(MONTHS.replace("Casos por mes", "Casos 2024 por mes").replace("Puno;..", "Narnia;x"))
    _, q = pipeline.check(source_from_dict(months_config(title_fields=[r"Casos (?P<year>\d{4})"])), path)
    _, q2 = pipeline.check(load_source(TABNET_YAML), TABNET_CSV)
    found = set(q["check"]) | set(q2["check"]) | {"not_reported", "crosstab_unknown_row"}
    assert {"crosstab_level", "crosstab_total", "crosstab_not_weekly", "unknown_place"} <= found
    assert found - {"type:int64"} <= known, found - known


def test_sub_rows_without_aggregate_are_named_by_the_files_lines():
    cfg = config()
    del cfg["aggregate"]
    with pytest.raises(pipeline.UndeclaredSubRows) as err:
        pipeline.check(source_from_dict(cfg), TABNET_CSV)
    assert "line 6 (Semana 01) and line 7 (Semana 01)" in str(err.value) and "aggregate: sum" in str(err.value)


def test_an_empty_cell_is_a_missing_count_unless_declared_zero(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(MONTHS.replace("Casos por mes", "Casos 2024 por mes").replace("Puno;..;1", "Puno;;1"))
    cfg = months_config(title_fields=[r"Casos (?P<year>\d{4})"])
    report, q = pipeline.check(source_from_dict(cfg), path)
    balanced(report)
    empty = q.filter(pl.col("severity") == "error").row(0, named=True)
    assert (empty["row"], empty["column"], empty["cases"]) == (4, "Semana 1", None) and report["rows"]["quarantined"] == 1
    cfg["layout"]["zero_markers"] = ["-", ""]
    report, q = pipeline.check(source_from_dict(cfg), path)
    balanced(report)
    assert report["rows"]["quarantined"] == 0 and report["rows"]["published"] == 4


def test_csv_with_two_header_rows_and_two_label_columns(tmp_path):
    """A CSV saved from a spreadsheet with merged cells: the year written once over its weeks (blanks filled from
    the left), the department's code and name in two label columns."""
    path = tmp_path / "col.csv"
    path.write_text("Casos de dengue por semana\n"
                    "Código;Departamento;2024;;;Total\n"
                    ";;1;2;3;\n"
                    "05;Antioquia;1;2;3;6\n"
                    "76;Valle del Cauca;-;1;-;1\n"
                    "Total;;1;3;3;7\n")
    cfg = {"id": "col_two_headers", "country": "COL", "reporter": {"institution": "x"}, "diseases": ["dengue"],
           "geo_level": "admin1", "issue_date": {"fixed": "2024-06-01"},
           "columns": {"place": "Departamento", "epi_year": "year", "epi_week": "week", "cases": "value"},
           "layout": {"kind": "crosstab", "header_rows": 2, "label_columns": 2, "publish": "department", "total_level": "total",
                      "rows": [{"level": "total", "pattern": "^Total$"}, {"level": "department", "pattern": r"^(?P<code>\d{2})$"}],
                      "columns": [{"kind": "week", "pattern": r"^(?P<year>\d{4}) \| (?P<week>\d{1,2})$"},
                                  {"kind": "total", "pattern": "^Total$"}],
                      "zero_markers": ["-"]}}
    report, q = pipeline.check(source_from_dict(cfg), path)
    balanced(report)
    assert report["rows"] == {"read": 12, "published": 6, "quarantined": 0, "set_aside": 6}
    assert report["cases"]["published"] == 7 == report["cases"]["read"] // 4      # weeks, Total column, Total row, both
    assert "header at line 2" in " ".join(report["notes"]) and "2 of 3 rows' weeks" not in " ".join(report["notes"])
    assert "Total row (line 6): equals the sum of the department rows in every column" in report["notes"]
    assert set(q.filter(pl.col("check") == "crosstab_total")["column"]) == {"Total"}


def test_the_readme_cross_tab_example_is_the_fixtures_config():
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    block = text.split("### Cross-tabs", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    shown, real = yaml.safe_load(block), yaml.safe_load(TABNET_YAML.read_text())
    assert shown == {k: real[k] for k in ("layout", "columns", "aggregate")}


def test_gzip_tabnet_and_a_named_xlsx_sheet(tmp_path):
    import gzip

    gz = tmp_path / "tabnet.csv.gz"
    gz.write_bytes(gzip.compress(TABNET_CSV.read_bytes()))
    plain, _ = pipeline.check(load_source(TABNET_YAML), TABNET_CSV)
    packed, _ = pipeline.check(load_source(TABNET_YAML), gz)
    assert (packed["rows"], packed["cases"]) == (plain["rows"], plain["cases"])
    cfg = config(XLSX_YAML, csv={"sheet": "Semanas"})
    report, _ = pipeline.check(source_from_dict(cfg), XLSX / "crosstab_merged_header.xlsx")
    assert report["cases"]["published"] == 1_393
    with pytest.raises(ReadError, match="no sheet 'Hoja1' .*the workbook has: Semanas"):
        pipeline.check(source_from_dict(config(XLSX_YAML, csv={"sheet": "Hoja1"})), XLSX / "crosstab_merged_header.xlsx")


# --------------------------------------------------------------------------- fuzz: an exact account or one clear error

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CELL = st.sampled_from(["0", "1", "7", "12", "-", "..", "", " 3 ", "x", "1.5", "-2", "abc"])
LABEL = st.sampled_from(["Total", "Cusco", "Puno", "..  Puno", "05 Norte", "", "Narnia", "Fuente: x"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(LABEL, st.lists(CELL, min_size=0, max_size=6)), min_size=0, max_size=8),
       weeks=st.integers(min_value=1, max_value=4))
def test_fuzz_crosstabs_account_for_every_cell(tmp_path, rows, weeks):
    """Generated cross-tabs (ragged rows, odd markers, unknown labels, a footer anywhere): a ReadError, or every cell
    read as a row and every integer cell's count accounted for in cases."""
    header = ["Departamento", *(f"Semana {w}" for w in range(1, weeks + 1)), "Enero", "Total"]
    text = "Casos 2024 por semana\n" + ";".join(header) + "\n" + "".join(f"{label};{';'.join(cells)}\n" for label, cells in rows)
    path = tmp_path / "fuzz.csv"
    path.write_text(text)
    cfg = months_config(title_fields=[r"Casos (?P<year>\d{4})"])
    cfg["layout"]["rows"] = [{"level": "total", "pattern": "^Total$"}, {"level": "sub", "pattern": r"^\d+ "},
                             {"level": "place", "pattern": r"^\w+$"}]
    cfg["limits"]["min_published_rows"] = 0
    try:
        report, q = pipeline.check(source_from_dict(cfg), path)
    except ReadError:
        return
    balanced(report)
    end = next((i for i, (label, _) in enumerate(rows) if label.startswith("Fuente:")), len(rows))
    kept = [(label, cells) for label, cells in rows[:end] if not (label.strip() == "" and all(not c.strip() for c in cells))]
    assert report["rows"]["read"] == len(kept) * (weeks + 2)
    counts = [int(c.strip()) for _, cells in kept for c in cells[: weeks + 2] if c.strip().isdigit()]
    assert report["cases"]["read"] == sum(counts)               # "-" is 0; a negative or unreadable cell is no count
