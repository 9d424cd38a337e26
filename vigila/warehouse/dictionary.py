"""Data dictionary generated from the pandera models and vocabularies (never written by hand).

Input: schemas.harmonised and schemas.outputs models, vigila.core.vocab; output: Markdown text and a
JSON-able dict, saved to docs/data_dictionary.md and to the warehouse's docs/.
"""

from __future__ import annotations

import pandera.polars as pa

from schemas.harmonised import SCHEMA_VERSION, CasesRevision, CasesWeekly, QuarantineRecord
from schemas.outputs import ALERTS_SCHEMA_VERSION, ENDEMIC_SCHEMA_VERSION, REPORTING_SCHEMA_VERSION, Alert, EndemicChannel, Reporting
from schemas.outputs import DISCREPANCIES_SCHEMA_VERSION, RECONCILED_SCHEMA_VERSION, CasesReconciled, Discrepancy
from schemas.outputs import SUMMARY_SCHEMA_VERSION, WeeklySummary
from vigila.core.vocab import AGE_GROUPS, CLASSIFICATION_DESCRIPTIONS, DISEASES

DATASETS: dict[str, tuple[type[pa.DataFrameModel], str]] = {
    "cases_weekly": (CasesWeekly, "Latest issue of every weekly count (one row per key). Partitioned by country_iso3, disease."),
    "cases_revisions": (CasesRevision, "Every issue of every weekly count, for `as_of` reads. Partitioned by country_iso3, disease."),
    "quarantine": (QuarantineRecord, "Rows that failed a check, one record per failure. Partitioned by source_id."),
    "alerts": (Alert, f"Early-detection results (schema {ALERTS_SCHEMA_VERSION}): one row per series x evaluated week x "
               "configured method (vigila/detect/detection.yaml), rebuilt whole by each detection run. Partitioned by method."),
    "reporting": (Reporting, f"Reporting completeness and timeliness (schema {REPORTING_SCHEMA_VERSION}): one row per source x epi "
                  "week, from the source's first published week (or its schedule.expected_from while it has published nothing) "
                  "to the last week ended, with expected vs received units "
                  "and the status against the source's schedule.deadline (vigila/ingest/completeness.py). A unit is a place x "
                  "disease (a disease for a line list), expected from its first published week on. Partitioned by source_id."),
    "endemic_channel": (EndemicChannel, f"Endemic channels (schema {ENDEMIC_SCHEMA_VERSION}): one row per series x target epi "
                        "week x method, the band from the same week of earlier years (vigila/regional/endemic.py, vigila/regional/endemic.yaml)."),
    "cases_reconciled": (CasesReconciled, f"Weekly counts reconciled across the reporters of one country (schema "
                         f"{RECONCILED_SCHEMA_VERSION}): one row per country x level x place x disease x epi week at admin0 "
                         "and admin1, with the basis and the sources used; rules in vigila/regional/reconciliation.yaml "
                         "(vigila/regional/reconcile.py), rebuilt whole by each run. Partitioned by country_iso3."),
    "discrepancies": (Discrepancy, f"Two reporters of the same population counting the same place-week (schema "
                      f"{DISCREPANCIES_SCHEMA_VERSION}): both counts, their difference and whether it exceeds the configured "
                      "tolerance (vigila/regional/reconcile.py, vigila/regional/reconciliation.yaml). Partitioned by country_iso3."),
    "weekly_summary": (WeeklySummary, f"The regional weekly summary (schema {SUMMARY_SCHEMA_VERSION}): one row per disease x "
                       "country x place x epi week from each series' first report to the region's latest week (weeks nobody "
                       "reported have null cases), with incidence, change, year-to-date, endemic zone, alarms, reporting "
                       "status and the signal flag; the bulletin's input (vigila/regional/summary.py, vigila/regional/summary.yaml). "
                       "Partitioned by disease."),
}


def _checks(col) -> str:
    out = []
    for c in col.checks:
        stats = c.statistics or {}
        if c.name == "isin":
            out.append("one of the controlled values below" if len(stats.get("allowed_values", [])) > 8
                       else "one of " + ", ".join(map(str, stats["allowed_values"])))
        else:
            out.append(f"{c.name}({', '.join(str(v) for v in stats.values())})")
    return "; ".join(out)


def as_dict() -> dict:
    datasets = {}
    for name, (model, about) in DATASETS.items():
        schema = model.to_schema()
        datasets[name] = {
            "description": about,
            "unique": list(schema.unique or []),
            "columns": [{"name": n, "type": str(c.dtype), "nullable": c.nullable, "checks": _checks(c),
                         "description": c.description or ""} for n, c in schema.columns.items()],
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "datasets": datasets,
        "vocabularies": {
            "disease": {k: {"name": v["name"], "icd10": v["icd10"]} for k, v in DISEASES.items()},
            "classification": CLASSIFICATION_DESCRIPTIONS,
            "age_group": AGE_GROUPS,
        },
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    d = as_dict()
    lines = [f"# Vigila data dictionary (schema {d['schema_version']})", "",
             "Generated from the pandera models in `schemas/` by `vigila dictionary`; do not edit by hand.", ""]
    for name, ds in d["datasets"].items():
        lines += [f"## `{name}`", "", ds["description"], ""]
        if ds["unique"]:
            lines += [f"Unique key: {', '.join(f'`{c}`' for c in ds['unique'])}.", ""]
        lines += ["| column | type | nullable | checks | description |", "|---|---|---|---|---|"]
        lines += [f"| `{c['name']}` | {c['type']} | {'yes' if c['nullable'] else 'no'} | {_cell(c['checks'])} | "
                  f"{_cell(c['description'])} |" for c in ds["columns"]]
        lines.append("")
    lines += ["## Diseases (controlled codes and ICD-10)", "", "| code | name | ICD-10 |", "|---|---|---|"]
    lines += [f"| `{k}` | {v['name']} | {', '.join(v['icd10'])} |" for k, v in d["vocabularies"]["disease"].items()]
    lines += ["", "## Case classifications", "", "| code | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in d["vocabularies"]["classification"].items()]
    lines += ["", "## Age groups", "", ", ".join(f"`{a}`" for a in d["vocabularies"]["age_group"]), ""]
    return "\n".join(lines)
