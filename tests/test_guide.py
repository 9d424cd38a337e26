"""docs/add_your_country.md runs: every configuration of its walk-throughs is checked with the whole CLI on the
real file it describes, and every figure the page quotes (exit code, rows and cases read / published /
quarantined / set aside) must be what `vigila check` reports; the last step of each is ingested and the page's
Python snippet run against the warehouse, its commented result compared."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "add_your_country.md"
STEP = re.compile(r"<!-- walkthrough (?P<name>\S+) step (?P<step>\d+)(?: fixture (?P<fixture>\S+))? -->\n```yaml\n"
                  r"(?P<yaml>.*?)```", re.S)
EXPECT = re.compile(r"<!-- expect (?P<name>\S+) step (?P<step>\d+): (?P<facts>[^>]*?) -->")
SNIPPET = re.compile(r"<!-- walkthrough (?P<name>\S+) ingest -->\n```python\n(?P<code>.*?)```", re.S)


def walkthroughs() -> dict[str, dict]:
    text = GUIDE.read_text(encoding="utf-8")
    found: dict[str, dict] = {}
    for m in STEP.finditer(text):
        w = found.setdefault(m["name"], {"steps": {}, "expect": {}, "fixture": None, "snippet": None})
        w["fixture"] = m["fixture"] or w["fixture"]
        w["steps"][int(m["step"])] = m["yaml"]
    for m in EXPECT.finditer(text):
        found[m["name"]]["expect"][int(m["step"])] = dict(f.split("=", 1) for f in m["facts"].split())
    for m in SNIPPET.finditer(text):
        found[m["name"]]["snippet"] = m["code"]
    return found


WALKS = walkthroughs()


def test_the_guide_walks_through_three_real_layouts():
    assert len(WALKS) >= 3, sorted(WALKS)
    for name, w in WALKS.items():
        assert w["fixture"] and (ROOT / w["fixture"]).is_dir(), name
        assert set(w["expect"]) == set(w["steps"]), f"{name}: every step states what check reports"
        assert w["snippet"], f"{name}: ends with reading the published data"


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vigila.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _fact(report: dict, dotted: str):
    value = report
    for part in dotted.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize("name", sorted(WALKS))
def test_walkthrough(name, tmp_path):
    w = WALKS[name]
    work = tmp_path / name
    shutil.copytree(ROOT / w["fixture"], work, ignore=shutil.ignore_patterns("*.yaml", "README.md"))
    for step, text in sorted(w["steps"].items()):
        config = work / f"step{step}.yaml"
        config.write_text(text, encoding="utf-8")
        out = _cli("check", config, "-q", "--json", work / f"step{step}.json", cwd=work)
        expect = dict(w["expect"][step])
        assert out.returncode == int(expect.pop("rc")), (step, out.stdout[-2000:], out.stderr[-2000:])
        if not expect:
            continue
        report = json.loads((work / f"step{step}.json").read_text())
        for kind in ("rows", "cases"):
            counts = report[kind]
            assert counts["read"] == counts["published"] + counts["quarantined"] + counts["set_aside"], (step, kind)
        for dotted, value in expect.items():
            assert _fact(report, dotted) == int(value), (step, dotted, report["rows"], report["cases"])
    last = work / f"step{max(w['steps'])}.yaml"
    out = _cli("ingest", last, "--warehouse", work / "warehouse", cwd=work)
    assert out.returncode in (0, 1), out.stdout[-2000:] + out.stderr[-2000:]
    lines = w["snippet"].splitlines()
    checked = 0
    for stmt in ast.parse(w["snippet"]).body:   # each expression statement with `# value` on its last line
        code_line, _, comment = lines[stmt.end_lineno - 1].partition("#")
        if not isinstance(stmt, ast.Expr) or not comment.strip():
            continue
        prefix = "\n".join(lines[:stmt.lineno - 1])
        expr = ast.get_source_segment(w["snippet"], stmt.value)
        result = subprocess.run([sys.executable, "-c", f"{prefix}\nprint(repr({expr}))"], cwd=work,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == comment.strip(), (expr, result.stdout)
        checked += 1
    assert checked, f"{name}: the snippet states a result"
