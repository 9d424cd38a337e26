"""The import arrows of the code point one way: each package imports only packages below it.

In: the source of vigila/, connectors/ and schemas/ (every import statement, lazy ones inside functions too,
parsed with `ast`); out: assertions on the package graph. Also: importing a subpackage stays cheap.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("core", "warehouse", "operate", "ingest", "detect", "regional")

#: bottom to top: a unit may import only the units before it (and itself)
LAYERS = [
    "vigila.reference",   # reference data (and the script that builds the catalogues)
    "vigila.core",        # vocabularies, places, catalogues, epi weeks
    "vigila.config",      # source-config models (the dhis2:/fhir: mappings included)
    "vigila.configdoc",
    "schemas",            # pandera models of the contracts
    "vigila.warehouse",   # storage, publish, read, the contracts as data
    "vigila.operate",     # run logs, notifications, UI artifacts, where runs go
    "connectors",         # fetching raw bytes; DHIS2 / FHIR parsing with the config's mappings
    "vigila.ingest",      # read -> check -> harmonise -> publish
    "vigila.detect",
    "vigila.regional",
    "vigila.oneoff",      # the flows' steps without Prefect
    "vigila.cli",
]
OURS = ("vigila", "connectors", "flows", "schemas")
ORCHESTRATION = ("prefect", "prefect_dask", "flows")


def unit(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "vigila" and len(parts) > 1:
        return f"vigila.{parts[1]}"
    return parts[0]


def imports() -> list[tuple[str, str, str]]:
    """(importing module, imported module, file:line) for every absolute import in the three packages."""
    out = []
    for package in ("vigila", "connectors", "schemas"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    # `from vigila import x`: x is a module of the package
                    targets = [f"{node.module}.{a.name}" for a in node.names] if node.module == "vigila" else [node.module]
                else:
                    continue
                out += [(module, t, f"{path.relative_to(ROOT)}:{node.lineno}") for t in targets]
    return out


def test_the_walker_sees_lazy_and_top_level_imports() -> None:
    found = {(unit(a), unit(b)) for a, b, _ in imports()}
    assert ("vigila.ingest", "connectors") in found      # lazy, inside pipeline.fetch / readers
    assert ("connectors", "vigila.config") in found       # top level


def test_each_package_imports_only_packages_below_it() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module, target, where in imports():
        a, b = unit(module), unit(target)
        if b.split(".")[0] not in OURS or a == b or a == "vigila.cli":
            continue
        if b == "flows" or rank.get(b, len(LAYERS)) > rank.get(a, -1):
            upward.append(f"{where}: {module} -> {target}")
    assert not upward, "imports pointing up the layers (see LAYERS):\n" + "\n".join(upward)


def test_every_unit_has_a_layer() -> None:
    units = {unit(m) for m, _, _ in imports()} | {unit(t) for _, t, _ in imports() if t.split(".")[0] in OURS}
    assert units - {"flows"} <= set(LAYERS), sorted(units - set(LAYERS) - {"flows"})


def test_config_never_imports_connectors() -> None:
    bad = [f"{w}: {t}" for m, t, w in imports() if m == "vigila.config" and unit(t) in ("connectors", "flows")]
    assert not bad


def test_the_core_never_imports_prefect_or_flows() -> None:
    """vigila/ is the pure core: only the CLI (the entry point) reaches Prefect and the flows."""
    bad = [f"{w}: {m} -> {t}" for m, t, w in imports()
           if m.startswith("vigila.") and m != "vigila.cli" and t.split(".")[0] in ORCHESTRATION]
    assert not bad, bad


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_importing_a_subpackage_imports_nothing_heavy(package: str) -> None:
    """Subpackage __init__ files stay empty; vigila.detect's has always exported its methods (numpy, polars)."""
    heavy = ("pandera", "prefect") if package == "detect" else ("polars", "pyarrow", "pandera", "prefect")
    code = f"import sys, vigila.{package}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"importing vigila.{package} imports {done.stdout.strip()}"
