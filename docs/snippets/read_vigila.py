from vigila.warehouse import read

# Peru and Brazil, dengue, epi weeks 1-10 of 2023, as published now (a polars LazyFrame)
peru_brazil = read.cases_weekly("warehouse", disease="dengue", country=["PER", "Brazil"],
                                weeks=("2023-W01", "2023-W10")).collect()
# the same counts as they were known on 10 January 2025 (latest issue on or before that date)
known_then = read.cases_weekly("warehouse", country="PE", weeks=2023, as_of="2025-01-10").collect()
# a derived dataset as it was published at the end of a day, and the versions kept
versions = read.versions("warehouse", "reporting")
reporting_then = read.reporting("warehouse", weeks=(2023, None), as_of=versions["created_at"][0]).collect()
