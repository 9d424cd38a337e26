"""Early-detection algorithms over many series at once (pure polars, no Prefect).

Input: a long frame (series_id, t, cases); output: one row per evaluated series-week with
expected, upperbound and alarm. Methods follow R `surveillance` 1.20.3 (parameters in snake_case).
"""

from vigila.detect.ears import ears

__all__ = ["ears"]
