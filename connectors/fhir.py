"""FHIR R4 `MeasureReport`s -> Vigila's canonical weekly count rows. Pure functions: no network.

Inputs: decoded FHIR R4 JSON (dicts) as a FHIR server returns them: searchset or collection
`Bundle` pages, or bare `MeasureReport`s; and a `FhirMapping` (a source's `fhir:` block, e.g.
`sources/fhir_reporter_example.yaml`). Outputs: polars frames.

- `next_link(bundle) -> str | None`: the URL of `Bundle.link` with relation `next` (paging).
- `read_bundle_pages(pages) -> (resources, problems)`: every resource of the pages, once.
  `OperationOutcome` entries (`search.mode` outcome) become problems, a repeated page (same
  entries) is skipped, a resource seen before (same `resourceType/id`) is not kept twice.
- `parse_measure_reports(resources, mapping) -> (rows, problems)`: one row per report x group x
  counted population x (total | stratum), in `ROW_SCHEMA`: place, week, disease, classification,
  sex, age_group, cases, plus `breakdown` and provenance (`report_id`, `row`).

Totals and strata are both kept and never mixed: the group's `population.count` is a row with
`breakdown` "total" (sex and age_group "all"); each stratum's `population.count` is a row whose
`breakdown` names the stratified dimensions ("sex", "age_group", "place", or e.g. "sex+age_group"
for a stratifier with components), the other dimensions "all". Summing cases over one breakdown
value never counts a case twice; totals are kept because strata need not partition them (a
stratum with an unmapped value, or a reporter omitting the unknown-sex stratum). When a
stratifier's counts do not add up to the total, a `strata_sum_differs_from_total` warning says so.

Problems (`PROBLEM_SCHEMA`), one record per finding, never a silent drop: `row` (1-based position
of the page for `read_bundle_pages`, of the resource for `parse_measure_reports`; 0 for the whole
set), `resource_id` (Bundle or resource id), `column` (element path, e.g.
`group[0].stratifier[1].stratum[2].population[0].count`), `check`, `value`, `severity`
(error: not published; warning: published, worth a look; set_aside: valid but out of scope,
e.g. a `pending` report or a population declared in `ignore_populations`).

Shapes as in the FHIR R4 specification (hl7.org/fhir/R4): measurereport.html (status, type,
measure, subject, reporter, period, group.population, group.stratifier.code (0..*),
stratum.value / stratum.component, stratum.population), bundle.html and http.html#paging (type,
entry.resource, entry.search.mode, link relation "next"); see tests/fixtures/fhir/README.md.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Literal

import polars as pl

from vigila.config import CountRule, FhirMapping, PlaceRule, StratifierRule  # noqa: F401  (the `fhir:` block)
from vigila.config import fhir_key as _key
from vigila.core.epiweek import weeks_of_dates
from vigila.core.vocab import AGE_GROUPS, SEXES

ROW_SCHEMA = {
    "country": pl.String, "place": pl.String, "week_start": pl.Date, "epi_year": pl.Int32, "epi_week": pl.Int32,
    "disease": pl.String, "classification": pl.String, "sex": pl.String, "age_group": pl.String,
    "cases": pl.Int64, "breakdown": pl.String, "report_id": pl.String, "row": pl.Int64,
}
PROBLEM_SCHEMA = {"row": pl.Int64, "resource_id": pl.String, "column": pl.String, "check": pl.String,
                  "value": pl.String, "severity": pl.String}
DIMENSIONS = ("sex", "age_group", "place")
_VOCAB = {"sex": SEXES, "age_group": AGE_GROUPS}


# --------------------------------------------------------------------------- FHIR element helpers


def code_keys(concept: dict | None) -> list[str]:
    """What a CodeableConcept can match in a mapping: "system|code" and "code" of each coding, then text."""
    concept = concept or {}
    keys = []
    for c in concept.get("coding") or []:
        if c.get("code") is not None:
            keys += [f"{c['system']}|{c['code']}"] if c.get("system") else []
            keys.append(c["code"])
    keys += [concept["text"]] if concept.get("text") else []
    return [_key(k) for k in keys]


def reference_keys(ref: dict | None) -> list[str]:
    """What a Reference can match: reference, its "Type/id" tail, identifier "system|value" and value, display."""
    ref = ref or {}
    keys = []
    if ref.get("reference"):
        keys.append(ref["reference"])
        keys.append("/".join(ref["reference"].split("/_history/")[0].rstrip("/").split("/")[-2:]))
    ident = ref.get("identifier") or {}
    if ident.get("value"):
        keys += [f"{ident['system']}|{ident['value']}"] if ident.get("system") else []
        keys.append(ident["value"])
    keys += [ref["display"]] if ref.get("display") else []
    return [_key(k) for k in keys]


def _lookup(keys: list[str], table: dict[str, Any]) -> Any:
    return next((table[k] for k in keys if k in table), None)


def _show(concept: Any) -> str | None:
    """A CodeableConcept or Reference as one short text for a problem record."""
    if not isinstance(concept, dict):
        return None if concept is None else str(concept)
    coding = (concept.get("coding") or [{}])[0]
    if coding.get("code") is not None:
        return f"{coding['system']}|{coding['code']}" if coding.get("system") else str(coding["code"])
    ident = concept.get("identifier") or {}
    return (concept.get("text") or concept.get("reference") or ident.get("value") or concept.get("display")
            or json.dumps(concept, sort_keys=True))


class _Problems(list):
    def add(self, row: int, resource_id: str | None, column: str | None, check: str, value: Any,
            severity: str = "error") -> None:
        self.append({"row": row, "resource_id": resource_id, "column": column, "check": check,
                     "value": None if value is None else str(value), "severity": severity})

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self, schema=PROBLEM_SCHEMA).sort("row", maintain_order=True)


# --------------------------------------------------------------------------- Bundles


def next_link(bundle: dict) -> str | None:
    """The next page's URL (`Bundle.link` with relation "next"), or None on the last page."""
    return next((link["url"] for link in bundle.get("link") or []
                 if link.get("relation") == "next" and link.get("url")), None)


def _self_link(bundle: dict) -> str | None:
    return next((link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "self"), None)


def _entry_key(entry: dict) -> str:
    res = entry.get("resource") or {}
    if res.get("resourceType") and res.get("id"):
        return f"{res['resourceType']}/{res['id']}"
    return entry.get("fullUrl") or json.dumps(entry, sort_keys=True)


def read_bundle_pages(pages: list[dict]) -> tuple[list[dict], pl.DataFrame]:
    """The resources of searchset / collection Bundle pages (or bare resources), each once.

    A page whose entries are exactly those of an earlier page (a server serving a page twice,
    whatever its Bundle id) is skipped with a `repeated_page` warning; a resource already read
    (same resourceType/id) is not kept again: `duplicate_resource` (identical) or
    `conflicting_duplicate` (changed in between: the first is kept). The last page still having a
    `next` link that is not one of the pages is `incomplete_paging`; searchset `total` differing
    from the matches read is `total_mismatch`.
    """
    problems, resources, kept = _Problems(), [], {}
    signatures: set[tuple] = set()
    ids: set[str] = set()
    selves: set[str] = set()
    matches, total = 0, None
    for n, page in enumerate(pages, 1):
        page_id, kind = page.get("id"), page.get("resourceType")
        if kind is None:
            problems.add(n, None, "resourceType", "not_fhir", json.dumps(page)[:80])
            continue
        if kind != "Bundle":
            entries = [{"resource": page}]
        elif page.get("type") in ("searchset", "collection"):
            entries = page.get("entry") or []
        else:
            problems.add(n, page_id, "type", "bundle_type", page.get("type"))
            continue
        signature = tuple(_entry_key(e) for e in entries)
        if signature in signatures and (signature or page_id in ids):
            problems.add(n, page_id, None, "repeated_page", _self_link(page) or page_id, "warning")
            continue
        if kind == "Bundle" and page_id in ids:
            problems.add(n, page_id, "id", "reused_bundle_id", page_id, "warning")
        signatures.add(signature)
        ids.add(page_id)
        selves.add(_self_link(page))
        if page.get("type") == "searchset" and total is None and isinstance(page.get("total"), int):
            total = page["total"]
        for i, entry in enumerate(entries):
            res, mode = entry.get("resource"), (entry.get("search") or {}).get("mode")
            column = f"entry[{i}]" if kind == "Bundle" else None
            if not isinstance(res, dict):
                problems.add(n, page_id, column, "entry_without_resource", entry.get("fullUrl"))
            elif mode == "outcome" or res.get("resourceType") == "OperationOutcome":
                for issue in res.get("issue") or []:
                    text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
                    severity = "error" if issue.get("severity") in ("fatal", "error") else "warning"
                    problems.add(n, page_id, column, "operation_outcome", text, severity)
            elif (key := _entry_key(entry)) in kept:
                same = kept[key] == json.dumps(res, sort_keys=True)
                problems.add(n, page_id, column, "duplicate_resource" if same else "conflicting_duplicate", key,
                             "warning" if same else "error")
            else:
                kept[key] = json.dumps(res, sort_keys=True)
                resources.append(res)
                matches += page.get("type") == "searchset" and mode in (None, "match")
    if pages and (url := next_link(pages[-1])) and url not in selves:
        problems.add(len(pages), pages[-1].get("id"), "link", "incomplete_paging", url)
    if total is not None and total != matches:
        problems.add(0, None, "total", "total_mismatch", f"{matches} matches read, Bundle.total {total}", "warning")
    return resources, problems.frame()


# --------------------------------------------------------------------------- MeasureReports


def _count(pop: dict, path: str, flag) -> int | None:
    count = pop.get("count")
    if count is None:
        flag(f"{path}.count", "missing_count", None)
    elif isinstance(count, bool) or not isinstance(count, int):
        flag(f"{path}.count", "type:integer", json.dumps(count))
    elif count < 0:
        flag(f"{path}.count", "greater_than_or_equal_to(0)", count)
    else:
        return count
    return None


class _Report:
    """One MeasureReport's rows and problems (a helper of `parse_measure_reports`)."""

    def __init__(self, m: FhirMapping, pos: int, res: dict, problems: _Problems):
        self.m, self.pos, self.res, self.problems = m, pos, res, problems
        self.rid = res.get("id")
        self.reported: set[tuple] = set()
        self.strat_rules = {r.code: r for r in m.stratifiers}

    def flag(self, column: str | None, check: str, value: Any, severity: str = "error") -> None:
        self.problems.add(self.pos, self.rid, column, check, value, severity)

    def once(self, column: str, check: str, value: Any, severity: str = "error") -> None:
        """Report an unmapped code once per report, at its first place."""
        if (check, value) not in self.reported:
            self.reported.add((check, value))
            self.flag(column, check, value, severity)

    def header(self) -> dict | None:
        """The report's fields common to all its rows, or None (problem recorded) if it yields none."""
        res, m = self.res, self.m
        if res.get("resourceType") != "MeasureReport":
            return self.flag("resourceType", "not_a_measure_report", res.get("resourceType"), "set_aside")
        if (status := res.get("status")) != "complete":   # R4: no data until the status is complete
            return self.flag("status", "report_status", status, "set_aside" if status == "pending" else "error")
        if res.get("type") not in m.report_types:
            return self.flag("type", "report_type", res.get("type"))
        measure = res.get("measure")
        disease = m.measures.get(_key(measure.split("|")[0])) if isinstance(measure, str) else None
        if disease is None:
            return self.flag("measure", "unknown_measure", measure)
        place = None
        if m.place.source != "none":
            ref = res.get(m.place.source)
            if (place := _lookup(reference_keys(ref), m.place.codes)) is None:
                return self.flag(m.place.source, "unknown_place", _show(ref))
        return {"country": m.country, "place": place, "disease": disease, "sex": "all", "age_group": "all",
                "report_id": self.rid, "row": self.pos}

    def classification(self, pop: dict, group_keys: list[str], path: str) -> str | None:
        keys = code_keys(pop.get("code"))
        rule = next((r for r in self.m.counts if r.population in keys and (r.group is None or r.group in group_keys)), None)
        if rule is None:
            ignored = any(k in self.m.ignore_populations for k in keys)
            self.once(f"{path}.code", "ignored_population" if ignored else "unknown_population",
                      _show(pop.get("code")), "set_aside" if ignored else "error")
            return None
        return rule.classification

    def dims(self, stratifier: dict, stratum: dict, path: str) -> dict[str, str] | None | Literal[False]:
        """Dimension -> canonical value of a stratum; None: a value is unmapped (problem recorded);
        False: its stratifier is unknown or ignored (problem recorded once)."""
        if stratum.get("component"):
            pairs = [([c.get("code")], c.get("value"), f"{path}.component[{i}].value")
                     for i, c in enumerate(stratum["component"])]
        else:
            pairs = [(stratifier.get("code") or [], stratum.get("value"), f"{path}.value")]
        out: dict[str, str] = {}
        for codes, value, value_path in pairs:
            keys = [k for code in codes for k in code_keys(code)]
            rule = _lookup(keys, self.strat_rules)
            if rule is None:
                ignored = any(k in self.m.ignore_stratifiers for k in keys)
                self.once(path.rsplit(".stratum", 1)[0] + ".code", "ignored_stratifier" if ignored else "unknown_stratifier",
                          " + ".join(_show(c) or "<missing>" for c in codes) or "<missing>", "set_aside" if ignored else "error")
                return False
            value_keys = code_keys(value)
            mapped = _lookup(value_keys, rule.values)
            if mapped is None and rule.dimension == "place":
                mapped = _lookup(value_keys, self.m.place.codes)
            if mapped is None and rule.dimension in _VOCAB:
                mapped = next((v for v in _VOCAB[rule.dimension] if _key(v) in value_keys), None)
            if mapped is None:
                return self.flag(value_path, "unknown_stratum_value", f"{rule.dimension}: {_show(value)}")
            out[rule.dimension] = mapped
        return out

    def rows(self, base: dict) -> list[dict]:
        rows = []
        for gi, group in enumerate(self.res.get("group") or []):
            group_keys = code_keys(group.get("code"))
            totals = {}
            for pi, pop in enumerate(group.get("population") or []):
                path = f"group[{gi}].population[{pi}]"
                if (cls := self.classification(pop, group_keys, path)) and (n := _count(pop, path, self.flag)) is not None:
                    totals[cls] = n
                    rows.append({**base, "classification": cls, "cases": n, "breakdown": "total"})
            for si, stratifier in enumerate(group.get("stratifier") or []):
                sums: dict[str, int] = defaultdict(int)
                for ti, stratum in enumerate(stratifier.get("stratum") or []):
                    path = f"group[{gi}].stratifier[{si}].stratum[{ti}]"
                    if (dims := self.dims(stratifier, stratum, path)) is False:
                        break
                    for pj, pop in enumerate(stratum.get("population") or []):
                        ppath = f"{path}.population[{pj}]"
                        if not (cls := self.classification(pop, group_keys, ppath)):
                            continue
                        if (n := _count(pop, ppath, self.flag)) is None:
                            continue
                        sums[cls] += n
                        if dims:
                            breakdown = "+".join(d for d in DIMENSIONS if d in dims)
                            rows.append({**base, **dims, "classification": cls, "cases": n, "breakdown": breakdown})
                for cls, n in sums.items():
                    if cls in totals and totals[cls] != n:
                        self.flag(f"group[{gi}].stratifier[{si}]", "strata_sum_differs_from_total",
                                  f"{cls}: strata {n}, total {totals[cls]}", "warning")
        return rows


def _period_weeks(periods: pl.DataFrame, convention: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(row -> week_start, epi_year, epi_week) for weekly periods; problems for the others."""
    day = r"^(\d{4}-\d{2}-\d{2})"   # the date as written (the reporter's local date), time and zone ignored
    dated = periods.with_columns(
        pl.col("start").str.extract(day).str.to_date("%Y-%m-%d", strict=False).alias("start_date"),
        pl.col("end").str.extract(day).str.to_date("%Y-%m-%d", strict=False).alias("end_date"),
    )
    weeks = weeks_of_dates(dated["start_date"], convention)
    dated = dated.join(weeks, left_on="start_date", right_on="date", how="left", maintain_order="left")
    seven_days = (pl.col("end_date") - pl.col("start_date") == pl.duration(days=6)).fill_null(False)
    opens_week = (pl.col("week_start") == pl.col("start_date")).fill_null(False)
    bad = dated.filter(~(seven_days & opens_week)).select(
        "row", "resource_id", pl.lit("period").alias("column"),
        pl.when(seven_days).then(pl.lit("period_not_epi_week")).otherwise(pl.lit("period_not_weekly")).alias("check"),
        pl.format("{}/{}", pl.col("start").fill_null(""), pl.col("end").fill_null("")).alias("value"),
        pl.lit("error").alias("severity"),
    )
    return dated.filter(seven_days & opens_week).select("row", "week_start", "epi_year", "epi_week"), bad


def parse_measure_reports(resources: list[dict], mapping: FhirMapping) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows (`ROW_SCHEMA`) and problems (`PROBLEM_SCHEMA`) of MeasureReports; see the module docstring."""
    problems, rows, periods = _Problems(), [], []
    for pos, res in enumerate(resources, 1):
        report = _Report(mapping, pos, res, problems)
        if (base := report.header()) is None:
            continue
        period = res.get("period") or {}
        start, end = (None if period.get(k) is None else str(period[k]) for k in ("start", "end"))
        periods.append({"row": pos, "resource_id": report.rid, "start": start, "end": end})
        rows += report.rows(base)
    weeks, bad_periods = _period_weeks(
        pl.DataFrame(periods, schema={"row": pl.Int64, "resource_id": pl.String, "start": pl.String, "end": pl.String}),
        mapping.epiweek,
    )
    base_schema = {k: v for k, v in ROW_SCHEMA.items() if k not in ("week_start", "epi_year", "epi_week")}
    frame = pl.DataFrame(rows, schema=base_schema).join(weeks, on="row", how="inner", maintain_order="left")
    return frame.select(list(ROW_SCHEMA)), pl.concat([problems.frame(), bad_periods]).sort("row", maintain_order=True)
