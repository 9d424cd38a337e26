library(arrow)
library(dplyr)

root <- "warehouse/datasets/cases_weekly"
current <- jsonlite::fromJSON(file.path(root, "_current.json"))$path  # one complete version
dengue <- open_dataset(file.path(root, current)) |>  # hive partitions; files starting with _ are skipped
  filter(disease == "dengue", country_iso3 %in% c("PER", "BRA"), epi_year == 2023) |>
  group_by(country_iso3) |>
  summarise(cases = sum(cases)) |>
  collect()
