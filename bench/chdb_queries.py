"""Times the stats API's statements on current ClickHouse (chdb, in-process), for
`glimpse-bench query --chdb PYTHON`.

Usage: chdb_queries.py DIR REPEATS, where DIR (written by the benchmark) holds
  schema.json    the migration statements (modern flavor), in order
  events.native.gz  the benchmark's events, exported from the 18.16 server in Native format,
                    gzip-compressed
  rollup_daily.native.gz, rollup_days.native.gz  its per-day rollup, exported likewise
  queries.json   [{"name": ..., "statements": [SQL, ...]}]: what one API request runs
Loads the events, merges the table's parts (as the 18.16 run does with OPTIMIZE), then runs each
request's statements REPEATS times (no warm-up, as in the 18.16 run) and prints one JSON line per query:
{"name", "p50_ms", "p95_ms"}, then {"version", "rows", "load_s"}. The statements of one
request run one after another (the API runs a comparison's two side by side), so the figure is
an upper bound of the request's database time; there is no HTTP or JSON work in it.
"""

import json
import os
import sys
import time

from chdb import session as chs


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[round((len(ordered) - 1) * q)]


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: chdb_queries.py DIR REPEATS\n")
        sys.exit(2)
    work, repeats = os.path.abspath(sys.argv[1]), int(sys.argv[2])
    with open(os.path.join(work, "schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    with open(os.path.join(work, "queries.json"), encoding="utf-8") as f:
        queries = json.load(f)
    sess = chs.Session(os.path.join(work, "chdb-session"))
    try:
        version = str(sess.query("SELECT version()", "CSV")).strip().strip('"')
        for statement in schema:
            sess.query(statement)
        started = time.perf_counter()
        for table in ("events", "rollup_daily", "rollup_days"):
            native = os.path.join(work, f"{table}.native.gz")
            # The compression is told by the name's `.gz`.
            sess.query(f"INSERT INTO glimpse.{table} SELECT * FROM file('{native}', Native)")
            sess.query(f"OPTIMIZE TABLE glimpse.{table} FINAL")
        load_s = time.perf_counter() - started
        rows = int(str(sess.query("SELECT count() FROM glimpse.events", "CSV")).strip())
        for query in queries:
            samples = []
            for _ in range(repeats):
                t = time.perf_counter()
                for statement in query["statements"]:
                    sess.query(statement, "JSONEachRow")
                samples.append((time.perf_counter() - t) * 1000)
            print(json.dumps({
                "name": query["name"],
                "p50_ms": percentile(samples, 0.5),
                "p95_ms": percentile(samples, 0.95),
            }))
        print(json.dumps({"version": version, "rows": rows, "load_s": load_s}))
    finally:
        sess.close()


if __name__ == "__main__":
    main()
