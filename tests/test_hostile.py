"""Hostile and broken input: bombs refused with bounded memory, corrupt archives rejected in one line,
implausible dates and counts quarantined, markup and formulas shown never obeyed, `location` confined,
echoes cut, encoding hints; and a hypothesis fuzz of the readers and the config loader."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigila.ingest import pipeline
from vigila.config import ConfigError, load_source, source_from_dict

from conftest import ROOT
from test_flow import run_cli

WEEKLY = {"id": "gtm_weekly", "country": "GTM", "reporter": {"institution": "MSPAS"}, "diseases": ["dengue"],
          "geo_level": "admin1", "columns": {"place": "departamento", "epi_year": "anio", "epi_week": "semana",
                                             "cases": "casos", "deaths": "muertes"}}
HEADER = "departamento,anio,semana,casos,muertes\n"


def cfg(**over):
    return source_from_dict({**WEEKLY, **over})


PEAK = ("import os, subprocess, sys\np = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(os.wait4(p.pid, 0)[2].ru_maxrss)")


def peak_mb_of(cmd: list[str]) -> float:
    """Peak resident memory of one command (its ru_maxrss). Started from a small launcher: a child forked
    straight from pytest would count pytest's own resident pages until it execs."""
    out = subprocess.run([sys.executable, "-c", PEAK, *cmd], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024


def write_yaml(tmp_path: Path, location: str, **over) -> Path:
    import yaml

    p = tmp_path / "gtm.yaml"
    p.write_text(yaml.safe_dump({**WEEKLY, "location": location, **over}))
    return p


# --------------------------------------------------------------------------- bombs and corrupt archives


def test_a_gzip_bomb_is_refused_streaming_with_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.csv.gz"
    z = zlib.compressobj(9, zlib.DEFLATED, 31)          # gzip container
    with bomb.open("wb") as f:
        f.write(z.compress(HEADER.encode()))
        line = b"Escuintla,2024,10,1,0\n" * 50_000
        for _ in range(1000):                            # ~1.1 GB of CSV in ~1 MB of gzip
            f.write(z.compress(line))
        f.write(z.flush())
    assert bomb.stat().st_size < 8 * 2**20
    yml = write_yaml(tmp_path, str(bomb))
    proc = subprocess.Popen([sys.executable, "-m", "vigila.cli", "check", str(yml)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    assert proc.returncode == 2 and "decompression bomb" in err and "Traceback" not in err
    assert peak_mb_of([sys.executable, "-m", "vigila.cli", "check", str(yml)]) < 500   # never the whole expansion


def test_an_xlsx_bomb_is_refused_from_the_zip_directory_before_reading(tmp_path):
    bomb = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/worksheets/sheet1.xml", "<row/>" * (40 * 2**20))   # 240 MB of XML, ~0.3 MB zipped
    with pytest.raises(pipeline.ReadError, match="decompression bomb"):
        pipeline.check(cfg(format="xlsx"), bomb)


def test_a_truncated_gzip_is_one_line_and_a_rejected_report(tmp_path):
    good = gzip.compress((HEADER + "Escuintla,2024,10,41,0\n" * 5000).encode())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(pipeline.ReadError, match="corrupt or truncated gzip"):
        pipeline.check(cfg(), cut)
    wh = tmp_path / "wh"
    with pytest.raises(pipeline.ReadError):
        pipeline.ingest(cfg(), cut, wh, run_id="r1")
    assert json.loads((wh / "reports" / "gtm_weekly" / "r1.json").read_text())["status"] == "rejected"
    res = run_cli("check", str(write_yaml(tmp_path, str(cut))))
    lines = [x for x in res.stderr.splitlines() if x and not x.startswith("PREFECT_IMPORTED")]
    assert res.returncode == 2 and len(lines) == 1 and "cut.csv.gz" in lines[0] and "Aborted" not in res.stderr


# --------------------------------------------------------------------------- plausibility


def test_implausible_weeks_years_and_deaths_are_quarantined(tmp_path):
    text = HEADER + "\n".join([
        "Escuintla,2024,10,41,0",       # 1 fine
        "Escuintla,2099,10,5,0",        # 2 a year nobody has lived
        "Escuintla,2031,3,5,0",         # 3 years after the issue date
        "Escuintla,2024,13,5,0",        # 4 within the tolerance (one week after the issue date's week)
        "Escuintla,2024,20,5,0",        # 5 weeks after it
        "Escuintla,1850,3,5,0",         # 6 before limits.min_epi_year
        "Petén,2024,10,3,7",            # 7 more deaths than cases
    ]) + "\n"
    f = tmp_path / "gt.csv"
    f.write_text(text)
    source = cfg(issue_date={"fixed": "2024-03-20"}, limits={"max_quarantined_share": 1})
    report, q = pipeline.check(source, f)
    checks = {(r["row"], r["check"]) for r in q.filter(pl.col("severity") == "error").to_dicts()}
    assert checks == {(2, "week_in_future"), (3, "week_in_future"), (5, "week_in_future"), (6, "implausible_year"),
                      (6, "greater_than_or_equal_to(1900)"), (7, "deaths_exceed_cases")}   # row 6: two checks, one row
    assert report["rows"] == {"read": 7, "published": 2, "quarantined": 5, "set_aside": 0}
    assert report["cases"]["published"] == 46 and report["cases"]["unaccounted"] == 0


# --------------------------------------------------------------------------- shown, never obeyed


def test_markup_and_emoji_codes_in_a_cell_are_printed_as_text(tmp_path):
    f = tmp_path / "gt.csv"
    f.write_text(HEADER + "Escuintla,2024,10,41,0\n[/],2024,10,3,0\n:x: [bold]boom,2024,10,2,0\n")
    res = run_cli("check", str(write_yaml(tmp_path, "gt.csv")), "--json", str(tmp_path / "r.json"))
    assert res.returncode == 3 and "Traceback" not in res.stderr
    assert "[/]" in res.stdout and ":x: [bold]boom" in res.stdout and "❌" not in res.stdout
    assert json.loads((tmp_path / "r.json").read_text())["rows"]["quarantined"] == 2


def test_formulas_in_series_ids_are_neutralised_in_csv_outputs(tmp_path):
    weeks = pl.date_range(dt.date(2020, 1, 5), dt.date(2021, 12, 26), "1w", eager=True)
    frame = pl.concat([pl.DataFrame({"series_id": sid, "week_start": weeks, "cases": list(range(weeks.len()))})
                       for sid in ("=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "@SUM(1+1)", "plain")])
    frame.write_csv(tmp_path / "in.csv")
    res = run_cli("detect", "--input", str(tmp_path / "in.csv"), "--method", "ears", "--output", str(tmp_path / "out.csv"))
    assert res.returncode == 0, res.stderr
    with (tmp_path / "out.csv").open() as f:
        ids = {row["series_id"] for row in csv.DictReader(f)}
    assert ids == {"'=HYPERLINK(\"http://x\",\"y\")", "'+cmd|' /C calc'!A0", "'@SUM(1+1)", "plain"}


def test_location_outside_the_allowed_roots_is_refused_before_reading(tmp_path):
    yml = write_yaml(tmp_path, "../../../../../../etc/passwd")
    with pytest.raises(ConfigError, match="outside the folders a source may read"):
        load_source(yml)
    res = run_cli("check", str(yml))
    assert res.returncode == 2 and "root:" not in res.stdout + res.stderr


def test_a_huge_header_is_not_echoed_whole(tmp_path):
    f = tmp_path / "wide.csv"
    f.write_text(",".join(f"column_{i}_" + "x" * 100 for i in range(50_000)) + "\n" + ",".join("1" * 50_000) + "\n")
    with pytest.raises(pipeline.ReadError) as err:
        pipeline.check(cfg(), f)
    assert len(str(err.value)) < 3000 and "(+49970 more)" in str(err.value)


def test_mis_decoded_utf8_names_get_an_encoding_hint_and_blank_breakdowns_count(tmp_path):
    f = tmp_path / "gt.csv"
    f.write_bytes((HEADER.strip() + ",sexo\n" + "Escuintla,2024,10,41,0,M\nSololá,2024,10,3,0,\nSololá,2024,11,4,0,F\n").encode())
    source = cfg(csv={"encoding": "latin-1"}, columns={**WEEKLY["columns"], "sex": "sexo"},
                 limits={"max_quarantined_share": 1})
    report, q = pipeline.check(source, f)
    assert any("look like UTF-8" in n and "csv.encoding: utf-8" in n for n in report["notes"])
    blank = q.filter(pl.col("check") == "missing_sex")
    assert blank["severity"].to_list() == ["warning"]                 # the count still counts, as sex 'unknown'
    fine, _ = pipeline.check(cfg(columns={**WEEKLY["columns"], "sex": "sexo"}), f)
    assert fine["rows"]["published"] == 3 and fine["cases"]["published"] == 48


# --------------------------------------------------------------------------- fuzz


CELLS = st.one_of(st.sampled_from(["Escuintla", "Petén", "", "NA", "-1", "1e9", "2024", "53", "54", "0", "x", "[/]", "=1+1",
                                   "\"", "3.5", " 7 ", "\t", "😀", "2024-03-03"]),
                  st.text(max_size=12), st.integers(-5, 300).map(str))


FUZZ = int(__import__("os").environ.get("VIGILA_FUZZ_EXAMPLES", "60"))   # `make torture` raises it


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELLS, min_size=3, max_size=7), min_size=0, max_size=25),
       delimiter=st.sampled_from([",", ";", "\t", "|"]), shape=st.sampled_from(["weekly_counts", "line_list"]),
       gz=st.booleans(), aggregate=st.sampled_from(["none", "sum"]))
def test_fuzz_readers_never_trace_back_and_always_account(tmp_path, rows, delimiter, shape, gz, aggregate):
    header = ["departamento", "anio", "semana", "casos", "muertes"]
    text = delimiter.join(header) + "\n" + "".join(delimiter.join(r) + "\n" for r in rows)
    data = text.encode("utf-8", "surrogatepass")
    f = tmp_path / ("fuzz.csv.gz" if gz else "fuzz.csv")
    f.write_bytes(gzip.compress(data) if gz else data)
    columns = dict(WEEKLY["columns"])
    if shape == "line_list":
        columns.pop("cases")
    source = cfg(shape=shape, columns=columns, limits={"max_quarantined_share": 1, "min_published_rows": 0},
                 **({"aggregate": aggregate} if shape != "line_list" else {}))
    try:
        report, _ = pipeline.check(source, f)
    except pipeline.ReadError:          # a file-level problem: one clear line (incl. undeclared sub-rows)
        return
    for what in ("rows", "cases", "deaths"):
        c = report.get(what)
        if c:
            assert c["read"] == c["published"] + c["quarantined"] + c["set_aside"], (what, c)


@settings(max_examples=FUZZ, deadline=None)
@given(text=st.text(max_size=300))
def test_fuzz_the_config_loader_gives_a_config_error_or_a_config(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("cfg") / "x.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_source(p)
    except ConfigError as e:
        assert str(e).startswith(str(p)) and "\n" not in str(e)


def test_sigkill_of_an_ingest_leaves_no_process_behind(tmp_path):
    """No Prefect API configured: `vigila ingest` starts no server, so killing it cannot orphan one."""
    import os
    import signal
    import time

    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": str(tmp_path / "ph")}
    peru = ROOT / "sources" / "per_minsa_dengue_linelist.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "vigila.cli", "ingest", str(peru), "--warehouse", str(tmp_path / "wh"),
                             "--quiet"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[int] = set()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and proc.poll() is None:     # every descendant it ever had, until the kill
        try:
            seen |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    alive = [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [] and not seen                               # none started, none left


@settings(max_examples=max(20, FUZZ // 3), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(CELLS, CELLS, CELLS, CELLS, CELLS), min_size=0, max_size=15),
       fmt=st.sampled_from(["json", "xlsx", "parquet"]))
def test_fuzz_json_xlsx_parquet_readers_account_for_every_row(tmp_path, rows, fmt):
    """The same generated rows through the other readers: a clear error or an exact account, never a traceback."""
    header = ["departamento", "anio", "semana", "casos", "muertes"]
    frame = pl.DataFrame([dict(zip(header, r)) for r in rows], schema={h: pl.Utf8 for h in header}, orient="row")
    f = tmp_path / f"fuzz.{fmt}"
    if fmt == "json":
        f.write_text(json.dumps(frame.to_dicts(), ensure_ascii=False))
    elif fmt == "xlsx":
        frame.write_excel(f)
    else:
        frame.write_parquet(f)
    source = cfg(format=fmt, limits={"max_quarantined_share": 1, "min_published_rows": 0})
    try:
        report, _ = pipeline.check(source, f)
    except pipeline.ReadError:
        return
    for what in ("rows", "cases", "deaths"):
        c = report.get(what)
        if c:
            assert c["read"] == c["published"] + c["quarantined"] + c["set_aside"], (what, c)


def test_prefect_telemetry_is_off_unless_the_operator_turns_it_on():
    code = ("import os\nos.environ.pop('PREFECT_SERVER_ANALYTICS_ENABLED', None); os.environ.pop('DO_NOT_TRACK', None)\n"
            "import flows\nprint(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'], os.environ['DO_NOT_TRACK'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["false", "1"]
    kept = subprocess.run([sys.executable, "-c", "import os, flows; print(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])"],
                          cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}).stdout.split()
    assert kept == ["true"]
