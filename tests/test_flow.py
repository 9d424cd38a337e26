"""The Prefect flow and the CLI on a real (temporary, SQLite) Prefect API, one per test session."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import connectors
from connectors.file import FileConnector
from vigila.warehouse import read
from vigila.cli import app

from conftest import ROOT

SOURCE = """\
id: gtm_mspas_weekly
country: GTM
reporter: {{institution: MSPAS Guatemala, type: ministry}}
diseases: [dengue]
geo_level: admin1
location: {location}
columns: {{place: departamento, epi_year: anio, epi_week: semana, cases: casos}}
"""
GOOD = "departamento,anio,semana,casos\nEscuintla,2024,10,41\nPetén,2024,10,12\nEscuintla,2024,11,38\n"


class FlakyConnector(FileConnector):
    """A drop folder that is unreachable on the first try (like a share mounted late)."""

    kind = "flaky"
    calls = 0

    def fetch(self, location: str):
        type(self).calls += 1
        if type(self).calls == 1:
            raise connectors.FetchError(f"{location}: share not mounted yet")
        return super().fetch(location.removeprefix("flaky://"))


@pytest.fixture()
def source(tmp_path):
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / "semana10.csv").write_text(GOOD)
    p = tmp_path / "gtm.yaml"
    p.write_text(SOURCE.format(location="drop"))
    return p


def test_flow_ingests_a_drop_folder(prefect_harness, source, tmp_path):
    from flows.ingest import ingest_source

    wh = str(tmp_path / "wh")
    [report] = ingest_source(str(source), wh)
    assert report["status"] == "published" and report["cases_published"] == 91
    got = read.cases_weekly(wh).select("geo_code", "epi_week", "cases").sort("geo_code", "epi_week").collect().rows()
    assert got == [("GT-05", 10, 41), ("GT-05", 11, 38), ("GT-17", 10, 12)]
    assert ingest_source(str(source), wh)[0]["status"] == "unchanged"
    reporting = read.dataset(wh, "reporting").collect()          # completeness refreshed by every run
    assert reporting.height > 0 and set(reporting["source_id"]) == {report["source_id"]}


def test_fetch_is_retried(prefect_harness, source, tmp_path, monkeypatch):
    from flows.ingest import ingest_source

    monkeypatch.setitem(connectors.REGISTRY, "flaky", FlakyConnector)
    FlakyConnector.calls = 0
    [report] = ingest_source(str(source), str(tmp_path / "wh"), location=f"flaky://{tmp_path / 'drop'}")
    assert FlakyConnector.calls == 2 and report["status"] == "published"


def test_cli_ingest_and_demo_commands(prefect_harness, source, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(source), "--warehouse", str(tmp_path / "wh"), "--issue-date", "2024-03-20"])
    assert res.exit_code == 0, res.output
    assert "91 cases" in res.output
    assert read.cases_weekly(tmp_path / "wh").collect()["issue_date"].unique().to_list()[0].isoformat() == "2024-03-20"
    res = runner.invoke(app, ["demo", "--warehouse", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    assert "per_minsa_dengue_linelist" in res.output and "cases_weekly" in res.output


def run_cli(*args, cwd=ROOT):
    code = ("import sys; from vigila.cli import app\n"
            "try:\n    app(sys.argv[1:])\nfinally:\n    print('PREFECT_IMPORTED=' + str('prefect' in sys.modules), file=sys.stderr)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_check_exit_codes_and_no_prefect(source, tmp_path):
    ok = run_cli("check", str(source), str(tmp_path / "drop" / "semana10.csv"))
    assert ok.returncode == 0 and "PREFECT_IMPORTED=False" in ok.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text(GOOD + "Atlantis,2024,10,3\nPetén,2024,54,1\n")
    out_json = tmp_path / "report.json"
    res = run_cli("check", str(source), str(bad), "--json", str(out_json))
    assert res.returncode == 3                                 # 2 rows of 5 fail: the run would be rejected
    assert "unknown_place" in res.stdout and "Atlantis" in res.stdout and "less_than_or_equal_to(53)" in res.stdout
    assert json.loads(out_json.read_text())["rows_quarantined"] == 2 and "rejected" in res.stdout
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(source.read_text() + "limits: {max_quarantined_share: 0.5}\n")
    res = run_cli("check", str(lenient), str(bad))
    assert res.returncode == 1 and "would be published" in res.stdout


@pytest.mark.parametrize("args, words", [
    (["check", "missing.yaml", "x.csv"], "no such source config"),
    (["check", "{source}", "{tmp}/nope.csv"], "no such file"),
    (["ingest", "{tmp}/typo.yaml"], "unknown key 'columns.casos'"),
])
def test_user_errors_are_one_line_without_traceback(source, tmp_path, args, words):
    (tmp_path / "typo.yaml").write_text(source.read_text().replace("cases: casos", "casos: casos"))
    res = run_cli(*[a.format(source=source, tmp=tmp_path) for a in args])
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line and not line.startswith("PREFECT_IMPORTED")]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in res.stderr


def test_a_lossy_run_is_rejected_by_the_flow_and_stays_rejected_in_status(prefect_harness, source, tmp_path):
    """Most rows fail: the flow fails (so Prefect and the operator alert see it), nothing is published,
    the report, quarantine and `vigila status` say rejected and how much was lost; the CLI exits 3."""
    from flows.ingest import ingest_source
    from vigila.ingest import completeness
    from vigila.ingest import pipeline
    from vigila.warehouse.storage import Storage

    (tmp_path / "drop" / "semana10.csv").write_text(GOOD + "Atlantis,2024,10,300\nNarnia,2024,10,200\n")
    source.write_text(source.read_text().replace("id: gtm_mspas_weekly", "id: gtm_lossy_weekly"))  # its own events
    wh = str(tmp_path / "wh")
    with pytest.raises(pipeline.RunRejected, match="of the cases read were quarantined"):
        ingest_source(str(source), wh)
    last = completeness.last_run(Storage.open(wh), "gtm_lossy_weekly")
    assert last["status"] == "rejected" and last["lost"]["cases"] == pytest.approx(500 / 591, abs=1e-4)
    assert read.quarantine(wh).collect()["cases"].sum() == 500
    with pytest.raises(FileNotFoundError):
        read.cases_weekly(wh).collect()
    res = CliRunner().invoke(app, ["ingest", str(source), "--warehouse", str(tmp_path / "wh2")])
    assert res.exit_code == 3 and "rejected" in res.output


def test_without_a_prefect_api_ingest_runs_in_process_and_publishes_what_the_flow_publishes(prefect_harness, source, tmp_path):
    """No PREFECT_API_URL: `vigila ingest` never imports Prefect (no temporary server to start or orphan),
    and publishes the same rows, reports and run record as the `ingest_source` flow run."""
    from flows.ingest import ingest_source
    from vigila.ingest import completeness
    from vigila.warehouse.storage import Storage

    home = tmp_path / "prefect-home"           # an empty Prefect profile: no API configured anywhere
    env_cli = ["ingest", str(source), "--warehouse", str(tmp_path / "plain"), "--issue-date", "2024-03-20"]
    res = subprocess.run([sys.executable, "-c", "import sys; from vigila.cli import app\ntry:\n    app(sys.argv[1:])\n"
                          "finally:\n    print('PREFECT_IMPORTED=' + str('prefect' in sys.modules), file=sys.stderr)", *env_cli],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={k: v for k, v in __import__("os").environ.items() if not k.startswith("PREFECT_")}
                         | {"PREFECT_HOME": str(home)})
    assert res.returncode == 0, res.stderr
    assert "PREFECT_IMPORTED=False" in res.stderr and "PREFECT_API_URL" in res.stdout      # and how to see runs
    import datetime as dt
    ingest_source(str(source), str(tmp_path / "flow"), issue_date=dt.date(2024, 3, 20))
    cols = ["geo_code", "epi_year", "epi_week", "cases", "issue_date"]
    plain, flow = (read.cases_weekly(tmp_path / w).select(cols).sort(cols).collect() for w in ("plain", "flow"))
    assert plain.equals(flow) and plain.height == 3
    runs = [completeness.last_run(Storage.open(tmp_path / w), "gtm_mspas_weekly") for w in ("plain", "flow")]
    assert [r["status"] for r in runs] == ["published", "published"] and runs[0]["cases"] == runs[1]["cases"]
    for w in ("plain", "flow"):                                            # reporting refreshed by both
        assert read.dataset(tmp_path / w, "reporting").collect().height > 0
