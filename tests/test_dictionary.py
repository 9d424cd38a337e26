"""The data dictionary is generated from the schemas, and the copy in docs/ is current."""

from __future__ import annotations

from schemas.harmonised import CasesWeekly
from vigila.warehouse import dictionary

from conftest import ROOT


def test_docs_copy_is_generated_not_hand_written():
    assert (ROOT / "docs" / "data_dictionary.md").read_text() == dictionary.markdown(), \
        "run `vigila dictionary` after changing schemas/"


def test_every_column_of_the_contract_is_documented():
    d = dictionary.as_dict()["datasets"]["cases_weekly"]
    assert [c["name"] for c in d["columns"]] == list(CasesWeekly.to_schema().columns)
    assert all(c["description"] for c in d["columns"])
    assert "A97" in dictionary.markdown()   # ICD-10 for dengue
