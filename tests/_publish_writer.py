"""Writer for the kill test: commits self-checking versions of one dataset until it is killed.

In: argv ROOT NAME SEED, then a line on stdin to start (so a test can pre-start the next writer
while the current one runs). Out: versions where each `version_tag` group has exactly `expected_rows`
rows summing `cases` to `expected_total`; prints "ready <version>" after its first commit, then
"commit <version>" per commit.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl

from vigila.warehouse.publish import commit, current_manifest
from vigila.warehouse.storage import Storage

REGIONS = [f"R{i}" for i in range(6)]
STATIC = "static"  # a partition written once and carried over by every later commit
GRACE_SECONDS = 2.0  # old versions do get vacuumed during the test, yet readers have ample time


def tagged(tag: str, cases: list[int]) -> pl.DataFrame:
    """Rows that carry their group's own row count and total, so any reader can check them."""
    return pl.DataFrame(
        {
            "version_tag": [tag] * len(cases),
            "expected_rows": [len(cases)] * len(cases),
            "expected_total": [sum(cases)] * len(cases),
            "cases": cases,
        }
    )


def next_commit(storage: Storage, name: str, rng: random.Random, tag: str):
    current = current_manifest(storage, name)
    present = {f.partition[0] for f in current.files} if current else set()
    chosen = rng.sample(REGIONS, rng.randint(1, 4))
    sizes = {r: rng.randint(1, 40) for r in chosen}
    cases = [rng.randint(0, 1000) for _ in range(sum(sizes.values()))]
    frame = tagged(tag, cases)
    replace: dict[tuple, pl.DataFrame] = {(r,): frame.clear() for r in present - {STATIC} - set(chosen)}
    append: dict[tuple, pl.DataFrame] = {}
    offset = 0
    for r, n in sizes.items():
        part = frame.slice(offset, n)
        offset += n
        if n > 1 and rng.random() < 0.3:  # exercise append on top of replace
            replace[(r,)], append[(r,)] = part.head(n // 2), part.slice(n // 2)
        else:
            replace[(r,)] = part
    if STATIC not in present:
        replace[(STATIC,)] = tagged(STATIC, [rng.randint(0, 1000) for _ in range(25)])
    return commit(
        storage,
        name,
        partition_by=["region"],
        replace=replace,
        append=append,
        schema_version="test-1",
        run_id=tag,
        grace_seconds=GRACE_SECONDS,
    )


def main() -> None:
    root, name, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    storage = Storage.open(root)
    rng = random.Random(seed)
    sys.stdin.readline()
    for i in range(1_000_000):
        m = next_commit(storage, name, rng, f"w{seed}-{i}")
        print(("ready" if i == 0 else "commit"), m.version, flush=True)


if __name__ == "__main__":
    main()
