"""Run pandera contracts on eager batches and turn failures into structured error records.

Input: an eager polars frame with a `_row` column and a pandera DataFrameModel; output: a frame
of error records (_row, field, check, value) — one per failing value, never a string message.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from vigila.ingest.cast import ERROR_SCHEMA
from vigila.ingest.readers import ROW

BATCH_ROWS = 1_000_000


def validate_batch(df: pl.DataFrame, model: type[pa.DataFrameModel]) -> pl.DataFrame:
    """All failures of `model` on `df` (lazy=True: every check runs), as error records."""
    try:
        model.validate(df.drop(ROW), lazy=True)
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
        rows = df[ROW]
        with_index = fc.filter(pl.col("index").is_not_null())
        records = with_index.select(
            rows.gather(with_index["index"].cast(pl.UInt32)).alias(ROW),
            pl.col("column").alias("field"), pl.col("check"), pl.col("failure_case").alias("value"),
        )
        frame_level = fc.filter(pl.col("index").is_null())
        if frame_level.height:  # e.g. a missing column or wrong dtype: applies to every row
            records = pl.concat([records.cast(ERROR_SCHEMA), frame_level.select(
                pl.lit(0, pl.Int64).alias(ROW), pl.col("column").alias("field"), pl.col("check"),
                pl.col("failure_case").alias("value")).cast(ERROR_SCHEMA)])
        return records.cast(ERROR_SCHEMA)
    return pl.DataFrame(schema=ERROR_SCHEMA)


def validate_frame(df: pl.DataFrame, model: type[pa.DataFrameModel], batch_rows: int = BATCH_ROWS) -> pl.DataFrame:
    """`validate_batch` over slices of `batch_rows`: bounded memory on large frames.
    Frame-wide checks (uniqueness) only see one batch; callers check keys before."""
    parts = [validate_batch(df.slice(i, batch_rows), model) for i in range(0, max(df.height, 1), batch_rows)]
    return pl.concat(parts) if parts else pl.DataFrame(schema=ERROR_SCHEMA)
