"""How fast a SINAN-shaped DATASUS .dbc is read: expand (pyreaddbc, child process) + DBF -> text Parquet, and
`vigila check` on it, beside reading the same rows as CSV.

Input: a row count; output: timings printed (and benchmarks/results/dbc_<rows>.json).
The .dbc is built from benchmarks/gen_linelist.py's CSV (SINAN column names, DBF widths) with literal-only DCL
coding (numpy, fast to write; DATASUS's files use matches too, so they are smaller, and expanding them costs
about the same per output byte).

CLI: python benchmarks/bench_dbc.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

WIDTHS = {"TP_NOT": 1, "ID_AGRAVO": 5, "DT_NOTIFIC": 8, "SEM_NOT": 6, "NU_ANO": 4, "DT_SIN_PRI": 8, "SEM_PRI": 6,
          "SG_UF_NOT": 2, "ID_MUNICIP": 6, "NU_IDADE_N": 4, "CS_SEXO": 1, "CLASSI_FIN": 2, "CRITERIO": 1, "EVOLUCAO": 1}


def literal_dcl(data: bytes) -> bytes:
    """DCL stream of literals only (uncoded, window 4096) + the end code, built with numpy."""
    raw = np.frombuffer(data, dtype=np.uint8)
    bits = np.unpackbits(raw[:, None], axis=1, bitorder="little")
    bits = np.concatenate([np.zeros((len(raw), 1), dtype=np.uint8), bits], axis=1).ravel()
    from dbc_writer import _Bits, _LENCODE

    end = _Bits()
    end.put(1, 1)
    end.huff(_LENCODE[15])
    end.put(255, 8)
    end_bits = np.unpackbits(np.frombuffer(end.bytes(), dtype=np.uint8), bitorder="little")[:end.n + 8 * len(end.out)]
    stream = np.concatenate([np.unpackbits(np.array([0, 6], dtype=np.uint8), bitorder="little"), bits, end_bits])
    return np.packbits(stream, bitorder="little").tobytes()


def build(csv: Path, out: Path) -> int:
    df = pl.read_csv(csv, infer_schema=False, columns=list(WIDTHS), truncate_ragged_lines=True)
    df = df.with_columns(pl.col(c).str.replace_all("-", "") for c in ("DT_NOTIFIC", "DT_SIN_PRI"))
    cols = [df[c].fill_null("").str.slice(0, w).str.pad_end(w) for c, w in WIDTHS.items()]
    records = pl.select(pl.concat_str([pl.lit(" "), *cols])).to_series()
    body = "".join(records.to_list()).encode("latin-1") + b"\x1a"
    fields = b"".join(struct.pack("<11sc4xBB14x", n.encode(), b"D" if n.startswith("DT_") else b"C", w, 0)
                      for n, w in WIDTHS.items())
    header_len, record_len = 32 + len(fields) + 1, 1 + sum(WIDTHS.values())
    header = struct.pack("<BBBBIHH20x", 3, 124, 12, 31, df.height, header_len, record_len) + fields + b"\x00"
    out.write_bytes(header + struct.pack("<I", zlib.crc32(body)) + literal_dcl(body))
    return df.height


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    from vigila.ingest import pipeline
    from vigila.config import source_from_dict
    from vigila.ingest.readers import read_raw

    with tempfile.TemporaryDirectory(prefix="vigila-bench-dbc-") as tmp:
        tmp = Path(tmp)
        csv = tmp / "linelist.csv"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gen_linelist.py"), str(csv), "--rows", str(args.rows)],
                       check=True, capture_output=True)
        dbc = tmp / "DENGBR24.dbc"
        n = build(csv, dbc)
        base = {"id": "bench_dbc", "country": "BRA", "reporter": {"institution": "benchmark"}, "diseases": ["dengue"],
                "shape": "line_list", "epiweek": "mmwr", "geo_level": "admin1",
                "columns": {"place": "SG_UF_NOT", "epi_yearweek": "SEM_NOT", "sex": "CS_SEXO", "classification": "CLASSI_FIN"},
                "value_maps": {"classification": {"10": "without_warning_signs", "11": "with_warning_signs", "12": "severe"}},
                "exclude": {"classification": ["5", "8"]}, "limits": {"max_quarantined_share": 1.0}}
        cfg = source_from_dict({**base, "format": "dbc"})
        t0 = time.perf_counter()
        table = read_raw(dbc, cfg, tmp)
        t_open = time.perf_counter() - t0
        table.close()
        t0 = time.perf_counter()
        report, _ = pipeline.check(cfg, dbc)
        t_dbc = time.perf_counter() - t0
        t0 = time.perf_counter()
        report_csv, _ = pipeline.check(source_from_dict({**base, "format": "csv"}), csv)
        t_csv = time.perf_counter() - t0
        assert report["rows"]["read"] == report_csv["rows"]["read"] == n   # (the CSV quarantines its ragged rows too)
        result = {"rows": n, "dbc_bytes": dbc.stat().st_size, "csv_bytes": csv.stat().st_size,
                  "dbc_open_s": round(t_open, 2), "check_dbc_s": round(t_dbc, 2), "check_csv_s": round(t_csv, 2),
                  "cases": report["cases"]}
    print(json.dumps(result, indent=1))
    (ROOT / "benchmarks" / "results" / f"dbc_{args.rows}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
