"""Controlled vocabularies (diseases, case classifications, sexes, age groups) as data.

Inputs: raw disease names (str) and numeric ages (polars expressions). Outputs: canonical
codes -- `disease_code`/`disease_table` for diseases, `age_band_expr` for 5-year age bands.
"""

from __future__ import annotations

import functools

import polars as pl

from vigila.core.places import normalise

# code -> name, ICD-10 codes/ranges (WHO ICD-10 2019 unless noted), aliases (disease names
# only, in English/Spanish/Portuguese/French; severity and case status are CLASSIFICATIONS).
DISEASES: dict[str, dict] = {
    "dengue": {
        "name": "Dengue",
        # A97.x since ICD-10 2019 (A97.0 without / A97.1 with warning signs / A97.2 severe);
        # A90 dengue fever and A91 dengue haemorrhagic fever are the legacy codes.
        "icd10": ["A97", "A90", "A91"],
        "aliases": ["Dengue fever", "Fiebre del dengue", "Febre da dengue", "Dengue virus disease"],
    },
    "chikungunya": {
        "name": "Chikungunya",
        "icd10": ["A92.0"],
        "aliases": ["Chikungunya fever", "Fiebre chikungunya", "Febre chikungunya",
                    "Fièvre chikungunya", "Chikungunya virus disease"],
    },
    "zika": {
        "name": "Zika virus disease",
        "icd10": ["A92.5", "U06"],  # U06 = provisional emergency code used 2016-2019
        "aliases": ["Zika", "Zika virus", "Enfermedad por virus del Zika", "Enfermedad por virus Zika",
                    "Doença pelo vírus Zika", "Maladie à virus Zika"],
    },
    "yellow_fever": {
        "name": "Yellow fever",
        "icd10": ["A95"],
        "aliases": ["Fiebre amarilla", "Febre amarela", "Fièvre jaune"],
    },
    "malaria": {
        "name": "Malaria",
        "icd10": ["B50-B54"],
        "aliases": ["Paludismo", "Paludisme"],
    },
    "measles": {
        "name": "Measles",
        "icd10": ["B05"],
        "aliases": ["Sarampión", "Sarampo", "Rougeole"],
    },
    "rubella": {
        "name": "Rubella",
        "icd10": ["B06"],
        "aliases": ["German measles", "Rubéola", "Rubéole"],
    },
    "cholera": {
        "name": "Cholera",
        "icd10": ["A00"],
        "aliases": ["Cólera", "Choléra"],
    },
    "leptospirosis": {
        "name": "Leptospirosis",
        "icd10": ["A27"],
        "aliases": ["Leptospirose"],
    },
    "pertussis": {
        "name": "Pertussis",
        "icd10": ["A37"],
        "aliases": ["Whooping cough", "Tos ferina", "Tosferina", "Tos convulsa", "Coqueluche"],
    },
    "diphtheria": {
        "name": "Diphtheria",
        "icd10": ["A36"],
        "aliases": ["Difteria", "Diphtérie"],
    },
    "influenza": {
        "name": "Influenza",
        "icd10": ["J09-J11"],
        "aliases": ["Flu", "Gripe", "Grippe"],
    },
    "covid19": {
        "name": "COVID-19",
        "icd10": ["U07.1", "U07.2"],  # U07.1 virus identified, U07.2 clinical/epidemiological
        "aliases": ["COVID", "COVID19", "Coronavirus disease 2019", "Enfermedad por coronavirus 2019",
                    "Doença pelo coronavírus 2019", "Maladie à coronavirus 2019"],
    },
    "sari": {
        "name": "Severe acute respiratory infection",
        # SARI is a syndromic case definition (WHO: acute respiratory infection with fever and
        # cough, onset within 10 days, requiring hospitalisation), not an ICD diagnosis. J09-J22
        # (influenza, pneumonia, other acute lower respiratory infections) is the usual proxy.
        "icd10": ["J09-J22"],
        "aliases": ["SARI", "IRAG", "Infección respiratoria aguda grave", "SRAG",
                    "Síndrome respiratória aguda grave", "Infection respiratoire aiguë sévère"],
    },
    "hepatitis_a": {
        "name": "Hepatitis A",
        "icd10": ["B15"],
        "aliases": ["Hepatite A", "Hépatite A"],
    },
    "salmonellosis": {
        "name": "Salmonellosis",
        "icd10": ["A02"],  # non-typhoidal; typhoid/paratyphoid (A01) are not included
        "aliases": ["Salmonelosis", "Salmonelose", "Salmonellose"],
    },
    "campylobacteriosis": {
        "name": "Campylobacteriosis",
        "icd10": ["A04.5"],
        "aliases": ["Campilobacteriosis", "Campilobacteriose", "Campylobactériose"],
    },
    "meningococcal": {
        "name": "Meningococcal disease",
        "icd10": ["A39"],
        "aliases": ["Meningococcal infection", "Enfermedad meningocócica", "Doença meningocócica",
                    "Infection à méningocoque"],
    },
    "tuberculosis": {
        "name": "Tuberculosis",
        "icd10": ["A15-A19"],
        "aliases": ["TB", "Tuberculose"],
    },
    "oropouche": {
        "name": "Oropouche virus disease",
        "icd10": ["A93.0"],
        "aliases": ["Oropouche", "Oropouche fever", "Fiebre de Oropouche", "Febre do Oropouche",
                    "Fièvre d'Oropouche"],
    },
    "mpox": {
        "name": "Mpox",
        "icd10": ["B04"],
        "aliases": ["Monkeypox", "Viruela símica", "Viruela del mono", "Varíola dos macacos",
                    "Variole du singe", "Variole simienne"],
    },
}

CLASSIFICATION_DESCRIPTIONS: dict[str, str] = {
    "suspected": "Meets the clinical case definition; not (yet) laboratory-confirmed.",
    "probable": "Suspected case with supportive evidence (e.g. rapid/IgM test or epidemiological link).",
    "confirmed": "Laboratory-confirmed (e.g. RT-PCR, NS1, virus isolation) per the source's definition.",
    "severe": "Severe disease; for dengue, WHO 2009 severe dengue (shock/leakage, bleeding, organ impairment).",
    "without_warning_signs": "WHO 2009 dengue classification: dengue without warning signs.",
    "with_warning_signs": "WHO 2009 dengue classification: dengue with warning signs (e.g. abdominal pain, "
    "persistent vomiting, mucosal bleeding).",
    "total": "All cases regardless of classification, as reported by the source.",
}
CLASSIFICATIONS: list[str] = list(CLASSIFICATION_DESCRIPTIONS)

SEXES: list[str] = ["female", "male", "other", "unknown", "all"]

_BANDS: list[str] = [f"{lo:02d}-{lo + 4:02d}" for lo in range(0, 80, 5)] + ["80+"]
#: a count in a source's own age band that does not nest in one of _BANDS; the band is in `age_band_source`
SOURCE_BAND = "source_band"
AGE_GROUPS: list[str] = [*_BANDS, "unknown", "all", SOURCE_BAND]
MAX_AGE = 120


def require_known(values, vocab, what: str) -> None:
    """A config check: ValueError naming the first of `values` that is not in `vocab` and the known
    ones (a dict's keys sorted, a list in its own order)."""
    bad = [v for v in values if v not in vocab]
    if bad:
        known = sorted(vocab) if isinstance(vocab, dict) else vocab
        raise ValueError(f"unknown {what} {bad[0]!r}; known: {', '.join(known)}")


def age_band_expr(age: pl.Expr) -> pl.Expr:
    """Ages in years -> AGE_GROUPS label (String). Fractional ages are floored (4.9 -> "00-04");
    null, NaN, negative or > MAX_AGE -> "unknown". Strings are cast strictly ("55" ok, " 55" ->
    "unknown"), so parse/strip messy age columns first."""
    years = age.cast(pl.Float64, strict=False)
    index = (years // 5).clip(upper_bound=len(_BANDS) - 1).cast(pl.Int64, strict=False)
    valid = years.is_not_nan() & (years >= 0) & (years <= MAX_AGE)
    return (
        pl.when(valid)
        .then(index.replace_strict(dict(enumerate(_BANDS)), default=None, return_dtype=pl.String))
        .otherwise(pl.lit("unknown"))
    )


@functools.cache
def _disease_lookup() -> dict[str, str]:
    lookup: dict[str, str] = {}
    for code, info in DISEASES.items():
        for raw in (code, info["name"], *info["aliases"]):
            key = normalise(raw)
            if lookup.setdefault(key, code) != code:
                raise ValueError(f"disease alias {raw!r} is ambiguous: {lookup[key]} vs {code}")
    return lookup


def disease_code(name: str) -> str | None:
    """Canonical disease code for a name/alias (case/accent/punctuation-insensitive), else None."""
    return _disease_lookup().get(normalise(name))


def disease_table() -> pl.DataFrame:
    """Columns key, disease, disease_name: for vectorised mapping with places.map_places."""
    rows = [(key, code, DISEASES[code]["name"]) for key, code in _disease_lookup().items()]
    return pl.DataFrame(rows, schema=["key", "disease", "disease_name"], orient="row")
