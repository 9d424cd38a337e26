"""Child process of test_partition_lock: one `oneoff.ingest_source` (the `vigila ingest` path without Prefect)
started when GO exists, with a pause after the publish has read the partition's revisions and before it commits,
so two racers' read-then-replace windows overlap unless something serialises them.

Usage: python _ingest_racer.py WAREHOUSE SOURCE.yaml GO_FILE PAUSE_SECONDS [nolock]
"""

import sys
import time
from pathlib import Path

from vigila import oneoff
from vigila.ingest import pipeline
from vigila.warehouse import publish

warehouse, source, go, pause = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
commit = publish.commit


def slow_commit(storage, name, **kwargs):
    if name == "cases_revisions":   # the publish has read the partitions' revisions; the other racer may now too
        time.sleep(pause)
    return commit(storage, name, **kwargs)


publish.commit = slow_commit
if sys.argv[5:] == ["nolock"]:   # only to show the test can fail: the pre-lock behaviour
    import contextlib

    pipeline.partition_locks = lambda storage, processed: contextlib.nullcontext([])
while not go.exists():
    time.sleep(0.01)
oneoff.ingest_source(source, warehouse)
