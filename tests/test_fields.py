"""The field-handler table (vigila/ingest/fields.py) and the layout table (vigila/ingest/layouts/).

Synthetic one-line configs only pick handlers; the behaviour of each handler on real files is covered by the
pipeline, harmonise and fixture tests, unchanged by the move into handlers.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from vigila import configdoc
from vigila.config import source_from_dict
from vigila.ingest import fields, layouts, plan
from vigila.ingest import harmonise as hz
from vigila.ingest.cast import FIELD_TYPES
from vigila.ingest.readers import ROW

BASE = {"id": "test_fields", "country": "PER", "reporter": {"institution": "x"}, "diseases": ["dengue"], "geo_level": "admin1",
        "issue_date": {"fixed": "2024-06-01"}}


def source(**over):
    return source_from_dict({**BASE, **over})


def test_every_check_a_handler_declares_is_in_the_catalogue() -> None:
    unknown = []
    for group, handlers in fields.HANDLERS.items():
        field = group.split("+")[-1]
        for h in handlers:
            for check in h.checks:
                name = check.format(field=field, kind=FIELD_TYPES.get(field, "text"))
                if not configdoc.check_known(name):
                    unknown.append(f"{group}: {name}")
    assert not unknown, f"add these to vigila/checks.yaml: {unknown}"


def test_every_typed_field_has_a_handler_and_every_text_field_a_group() -> None:
    groups = {f for g in fields.HANDLERS for f in g.split("+")}
    assert set(FIELD_TYPES) <= groups, set(FIELD_TYPES) - groups
    typed = {f for f, kind in FIELD_TYPES.items() if kind != "text"}
    assert typed <= set(fields.HANDLERS), typed - set(fields.HANDLERS)


def test_the_handler_follows_the_source() -> None:
    line_list = source(shape="line_list", columns={"date": "d", "place": "p", "deaths": "x"})
    counts = source(columns={"epi_year": "y", "epi_week": "w", "place": "p", "cases": "c", "deaths": "x"})
    assert fields.handler_for("deaths", line_list).checks == ("unmapped_deaths",)   # a death flag per case
    assert fields.handler_for("deaths", counts) is fields.TYPED                    # a count
    several = source(country=None, columns={"country": "k", "place": "p", "epi_year": "y", "epi_week": "w", "cases": "c"})
    assert fields.handler_for("place", several) is None        # resolved with its country ("country+place")
    assert fields.handler_for("country+place", several).stage == 2
    assert fields.handler_for("no_such_field", counts) is None


def test_domains_come_in_stage_order_and_exclude_applies_to_scoped_groups_only() -> None:
    cfg = source(shape="line_list", columns={"place_parent": "dep", "place": "prov", "epi_year": "y", "epi_week": "w",
                                             "sex": "s", "age": "edad", "age_unit": "unidad"},
                 place_codes="indec", country="ARG", geo_level="admin2", exclude={"epi_week": ["9"]})
    batch = pl.DataFrame({"place_parent": ["06"], "place": ["371"], "epi_year": ["2024"], "epi_week": ["9"], "sex": ["F"],
                          "age": ["4"], "age_unit": ["A"], ROW: [1]})
    ctx = hz.Context.build(cfg, dt.date(2024, 6, 1))
    domains = plan.build_domains(plan.distinct_values(batch, cfg), cfg, ctx)
    # fields read alone in mapped order, then the age pair (stage 0), the place pair (1), the week pair (2)
    assert [d.id for d in domains] == ["epi_year", "epi_week", "sex", "age_pair", "place_pair", "week_pair"]
    by_id = {d.id: d for d in domains}
    assert by_id["epi_week"].table[by_id["epi_week"].chk].to_list() == ["excluded_value"]   # scoped: set aside
    assert by_id["week_pair"].table[by_id["week_pair"].chk].to_list() == [None]            # a cross-field check: not


def test_the_layout_table_reads_records_and_cross_tabs() -> None:
    assert layouts.kind_of(source(columns={"place": "p", "epi_year": "y", "epi_week": "w", "cases": "c"})) == "records"
    assert set(layouts.LAYOUTS) == {"records", "crosstab"}
    for kind in layouts.LAYOUTS:
        module, function = layouts.LAYOUTS[kind].split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function)), kind


@pytest.mark.parametrize("kind", ["crosstab"])
def test_a_config_layout_kind_has_a_layout(kind: str) -> None:
    from typing import get_args

    from vigila.config import Layout

    assert set(get_args(Layout.model_fields["kind"].annotation)) <= set(layouts.LAYOUTS) - {"records"}
    assert kind in layouts.LAYOUTS
