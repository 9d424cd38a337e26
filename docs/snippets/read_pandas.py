import json

import pandas as pd

root = "warehouse/datasets/cases_weekly"
current = json.load(open(f"{root}/_current.json"))["path"]
dengue = pd.read_parquet(f"{root}/{current}",  # pyarrow skips _manifest.json; filters prune partitions
                         filters=[("disease", "==", "dengue"), ("country_iso3", "in", ["PER", "BRA"])])

# or through vigila.warehouse.read (filters, as_of), then to pandas
from vigila.warehouse import read

alerts = read.alerts("warehouse", country="Peru", weeks=("2023-W40", None)).collect().to_pandas()
