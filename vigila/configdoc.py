"""The source-config language, documented from the config models themselves (never by hand).

In: the pydantic models of `vigila.config` (the `dhis2:` / `fhir:` mappings included), the
comments of `vigila/defaults.yaml` (the one place defaults live and are explained) and the comments beside each
model field; an example for each key from the bundled configs. Out: docs/config_reference.md, one row per key:
type, default, allowed values, meaning, example. `vigila config-reference` writes it; a test keeps it in sync.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel

from vigila.config import DEFAULTS_PATH, SourceConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIGS = [ROOT / "sources" / "per_minsa_dengue_linelist.yaml", ROOT / "sources" / "paho_opendengue_national.yaml",
                   *sorted((ROOT / "tests" / "fixtures" / "real").glob("*/*.yaml")), *sorted((ROOT / "sources").glob("*.yaml"))]
KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


def defaults_comments(path: Path = DEFAULTS_PATH) -> dict[str, str]:
    """dotted key -> the comments that explain it in defaults.yaml: the block of comment lines just above the
    key, its own trailing comment, and comment-only lines indented under it."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    last: str | None = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            above, last = [], None
            continue
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            indent = len(line) - len(line.lstrip())
            if last is not None and indent > 20:           # a continuation of the key line's own comment
                out[last] = f"{out[last]} {text}".strip()
            else:
                above.append(text)
            continue
        m = KEY_LINE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([*(k for _, k in stack), m["key"]])
        stack.append((indent, m["key"]))
        own = m["rest"].split("#", 1)[1].strip() if "#" in m["rest"] else ""
        out[key] = " ".join([*above, own]).strip()
        above, last = [], key
    return out


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """field -> the `# comment` beside it in the model's source (or its Field description)."""
    out = {name: f.description for name, f in model.model_fields.items() if f.description}
    try:
        source = inspect.getsource(model)
    except (OSError, TypeError):
        return out
    for line in source.splitlines():
        m = re.match(r"^\s+([a-z_][a-z0-9_]*)\s*:\s*[^#]+#\s*(.+)$", line)
        if m and m[1] in model.model_fields:
            out.setdefault(m[1], m[2].strip())
    return out


def _nested(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of"
    if origin in (types.UnionType, typing.Union):
        names = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping {type_name(args[0])} → {type_name(args[1])}" if args else "mapping"
    if annotation is Any:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation)).replace("date", "date (YYYY-MM-DD)")


def allowed(annotation: Any) -> str:
    lits = [a for a in (get_args(annotation) if get_origin(annotation) is not Literal else (annotation,)) if get_origin(a) is Literal]
    if get_origin(annotation) is Literal:
        lits = [annotation]
    if get_origin(annotation) is dict:
        lits = [a for a in get_args(annotation) if get_origin(a) is Literal]
    return ", ".join(f"`{v}`" for lit in lits for v in get_args(lit))


def _examples() -> dict[str, Any]:
    """dotted key -> the value the first bundled config that sets it gives."""
    found: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                key = f"{prefix}.{k}" if prefix else str(k)
                found.setdefault(key, v)
                if isinstance(v, dict) and not key.startswith(("value_maps.", "dhis2.data_elements", "dhis2.org_units",
                                                               "dhis2.category_option_combos", "fhir.measures")):
                    walk(v, key)
    for path in EXAMPLE_CONFIGS:
        walk(yaml.safe_load(path.read_text()) or {}, "")
    return found


def _short(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= 70 else text[:67] + "…"


def rows() -> list[dict[str, str]]:
    """One dict per config key (nested models expanded), in the models' order."""
    comments, examples = defaults_comments(), _examples()

    from vigila.config import Dhis2Mapping, FhirMapping, Layout, PeriodColumn, RowLevel

    mappings = {"dhis2": Dhis2Mapping, "fhir": FhirMapping, "layout": Layout, "layout.rows": RowLevel,
                "layout.columns": PeriodColumn}
    out: list[dict[str, str]] = []

    def walk(model: type[BaseModel], prefix: str, defaults: Any) -> None:
        own = field_comments(model)
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            nested = _nested(field.annotation) or mappings.get(key)
            if isinstance(defaults, dict) and name in defaults:
                default = defaults[name]
            elif field.is_required():
                default = "required"
            elif nested:
                default = "—"
            else:
                default = field.get_default(call_default_factory=True)
            doc = inspect.getdoc(nested) if nested else ""
            out.append({"key": key, "type": "section" if nested else type_name(field.annotation), "doc": doc or "",
                        "default": "" if nested else _short(default) if default not in ("—", "required") else default,
                        "allowed": allowed(field.annotation), "meaning": comments.get(key) or own.get(name, ""),
                        "example": "" if nested or key not in examples else f"`{key.rsplit('.', 1)[-1]}: {_short(examples[key])}`"})
            if nested:
                walk(nested, f"{key}.", defaults.get(name) or {} if isinstance(defaults, dict) else {})

    walk(SourceConfig, "", yaml.safe_load(DEFAULTS_PATH.read_text()))
    return out


def markdown() -> str:
    lines = ["# Source config reference", "",
             "Generated from the config models (`vigila/config.py`) and "
             "the comments of `vigila/defaults.yaml` by `vigila config-reference`; do not edit by hand. A source YAML "
             "overrides any default; nested mappings merge key by key, lists and scalars are replaced. Secrets are "
             "never in a config: `http.auth.*_env` name environment variables and `http.auth.secret_block` a Prefect "
             "Secret block (created with `prefect block create secret` or in the UI, on the Prefect server the runs "
             "use). Every check a run can report is in [checks.md](checks.md).", ""]
    header = ["| key | type | default | allowed | meaning | example |", "|---|---|---|---|---|---|"]
    all_rows = rows()
    sections = [r for r in all_rows if r["type"] == "section"]
    top = [r for r in all_rows if "." not in r["key"] and r["type"] != "section"]
    lines += ["## Top level", "", *header, *(_row(r) for r in top)]
    for sec in sections:
        inner = [r for r in all_rows if r["key"].startswith(sec["key"] + ".") and r["type"] != "section"
                 and r["key"].count(".") == sec["key"].count(".") + 1]
        about = " ".join(x for x in (sec["meaning"], sec["doc"].replace("\n", " ")) if x)
        lines += ["", f"## `{sec['key']}`", "", *([about, ""] if about else []), *header, *(_row(r) for r in inner)]
    return "\n".join(lines) + "\n"


def _row(r: dict[str, str]) -> str:
    default = r["default"]
    default = f"`{default}`" if default not in ("", "required", "—") else default
    cells = [f"`{r['key']}`", r["type"], default, r["allowed"], r["meaning"], r["example"]]
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


CHECKS_PATH = Path(__file__).with_name("checks.yaml")


def checks() -> dict[str, dict[str, dict[str, str]]]:
    """stage -> check name (a template: `{a|b}` one of, `{n}` any value) -> severity, meaning, fix."""
    return yaml.safe_load(CHECKS_PATH.read_text())


def check_known(name: str) -> bool:
    """True when a reported check name matches an entry of the catalogue."""
    for entries in checks().values():
        for template in entries:
            pattern = re.escape(template)
            pattern = re.sub(r"\\\{([a-z0-9_]+(?:\\\|[a-z0-9_]+)+)\\\}", lambda m: "(" + m[1].replace("\\|", "|") + ")", pattern)
            pattern = re.sub(r"\\\{[a-z]+\\\}", ".+", pattern)
            if re.fullmatch(pattern, name) or (template.startswith("str_matches") and re.fullmatch(r"[a-z_]+\(.*\)", name)):
                return True
    return False


def checks_markdown() -> str:
    lines = ["# Checks", "", "Every check a Vigila run can report: in the quarantine dataset's `check` column, in each run's "
             "data-quality report (`by_check`) and in the Prefect artifact. Generated from `vigila/checks.yaml` by "
             "`vigila config-reference`; do not edit by hand. Severity: **error** the row is quarantined (not published); "
             "**warning** published, the value counted as unknown; **set_aside** valid but out of scope; **file** the "
             "whole file is refused in one line with a `rejected` report. A run whose quarantined share passes "
             "`limits.max_quarantined_share` publishes nothing (see config_reference.md)."]
    for stage, entries in checks().items():
        lines += ["", f"## {stage}", "", "| check | severity | meaning | usual fix |", "|---|---|---|---|"]
        for name, e in entries.items():
            lines.append(f"| `{name}` | {e['severity']} | {e['meaning']} | {e['fix']} |".replace("\n", " "))
    return "\n".join(lines) + "\n"


DOCS = {"config_reference.md": markdown, "checks.md": checks_markdown}
