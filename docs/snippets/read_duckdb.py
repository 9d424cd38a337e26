import json

import duckdb

root = "warehouse/datasets/cases_weekly"
current = json.load(open(f"{root}/_current.json"))["path"]  # e.g. versions/v000003-1a2b3c4d: one complete version
totals = duckdb.sql(f"""
    select country_iso3, epi_year, sum(cases) as cases
    from read_parquet('{root}/{current}/**/*.parquet', hive_partitioning = true)
    where disease = 'dengue' and country_iso3 in ('PER', 'BRA')
    group by all order by all
""").fetchall()

# or query what vigila.warehouse.read filtered (DuckDB reads polars frames by their variable name)
from vigila.warehouse import read

peru = read.cases_weekly("warehouse", country="PER", weeks=2023).collect()
peru_2023 = duckdb.sql("select sum(cases) from peru").fetchall()[0][0]
