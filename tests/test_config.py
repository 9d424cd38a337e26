"""Source configs: the bundled ones load; user mistakes give one line naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigila.config import ConfigError, load_source

from conftest import SOURCES

MINIMAL = """\
id: test_source
country: PER
reporter:
  institution: MINSA
  type: ministry
diseases: [dengue]
shape: weekly_counts
columns:
  epi_year: ano
  epi_week: semana
  cases: casos
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "src.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", sorted(SOURCES.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_sources_load(path):
    cfg = load_source(path)
    assert cfg.id == path.stem
    assert cfg.location and ("://" in cfg.location or Path(cfg.location).exists())   # a URL is fetched, not a path


def test_defaults_are_layered_under_the_source(tmp_path):
    cfg = load_source(write(tmp_path, MINIMAL))
    assert cfg.epiweek == "mmwr"                     # PAHO convention by default
    assert cfg.csv.encoding == "auto" and "NA" in cfg.csv.na_values
    assert cfg.mapped == {"epi_year": "ano", "epi_week": "semana", "cases": "casos"}


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    p = write(tmp_path, MINIMAL.replace("  cases: casos", "  casses: casos"))
    with pytest.raises(ConfigError) as e:
        load_source(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:11: ")
    assert "columns.casses" in msg and "did you mean 'cases'" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("change, line, words", [
    (("country: PER", "country: XXX"), 2, "not an ISO 3166-1 alpha-3"),
    (("diseases: [dengue]", "diseases: [dengeu]"), 6, "unknown disease 'dengeu'"),
    (("type: ministry", "type: ministery"), 5, "reporter.type"),
    (("shape: weekly_counts", "shape: weekly"), 7, "shape"),
    (("  cases: casos\n", ""), 1, "needs columns.cases"),
])
def test_bad_values_are_one_line_with_location(tmp_path, change, line, words):
    p = write(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(ConfigError) as e:
        load_source(p)
    assert str(e.value).startswith(f"{p}:{line}: ") and words in str(e.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"src.yaml:4: invalid YAML"):
        load_source(write(tmp_path, "id: x\ncolumns:\n  - a\n b: c\n"))
    with pytest.raises(ConfigError, match="no such source config"):
        load_source(tmp_path / "nope.yaml")


def test_schedule_is_validated(tmp_path):
    ok = load_source(write(tmp_path, MINIMAL + "schedule:\n  cron: '0 8 * * 2'\n  timezone: America/Lima\n"))
    assert ok.schedule.cron == "0 8 * * 2"
    with pytest.raises(ConfigError, match="unknown IANA timezone"):
        load_source(write(tmp_path, MINIMAL + "schedule:\n  timezone: Mars/Olympus\n"))


def test_exclude_must_name_a_mapped_field(tmp_path):
    ok = load_source(write(tmp_path, MINIMAL + "exclude:\n  cases: ['-1']\n"))
    assert ok.exclude == {"cases": ["-1"]}
    with pytest.raises(ConfigError, match="exclude.sex: the field is not mapped"):
        load_source(write(tmp_path, MINIMAL + "exclude:\n  sex: ['I']\n"))
