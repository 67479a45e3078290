"""Proves on current ClickHouse (chdb) that the per-day rollup answers exactly as the events do.

Usage: rollup.py DIR, where DIR (written by tests/stats_api/rollup.rs) holds
  schema.json     the migration statements (modern flavor), in order
  events.native   the stats test's fixture events, exported from ClickHouse 18.16 (Native)
  builds.json     the statements building the rollup of every day of the fixture (version 1)
  questions.json  [{"name", "raw": [SQL...], "rolled": [SQL...]}]: the statements the API sends
                  for a question without rolled days and with every fixture day rolled
Builds the rollup with the builds' own statements, lists every built day in rollup_days as the
query service does, then runs both forms of every question and compares their rows. Exit status:
0 all equal, 1 a difference or a failed statement (printed), 2 bad usage, 3 no chdb.
"""

import json
import os
import sys

try:
    from chdb import session as chs
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.stderr.write(f"rollup.py: cannot import chdb with {sys.executable} ({e})\n")
    sys.exit(3)

MANIFEST = """INSERT INTO glimpse.rollup_days
SELECT site, toDate(visit_start, 'UTC') AS day, 1, count(), sum(visitor_id)
FROM glimpse.events WHERE name != 'engagement' GROUP BY site, day"""


def rows(sess, statement):
    text = str(sess.query(statement, "JSONEachRow"))
    return sorted(line for line in text.splitlines() if line.strip())


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: rollup.py DIR\n")
        sys.exit(2)
    work = os.path.abspath(sys.argv[1])

    def load(name):
        with open(os.path.join(work, name), encoding="utf-8") as f:
            return json.load(f)

    sess = chs.Session(os.path.join(work, "chdb-session"))
    try:
        version = str(sess.query("SELECT version()", "CSV")).strip().strip('"')
        for statement in load("schema.json"):
            sess.query(statement)
        events = os.path.join(work, "events.native")
        sess.query(f"INSERT INTO glimpse.events SELECT * FROM file('{events}', Native)")
        for statement in load("builds.json"):
            sess.query(statement)
        sess.query(MANIFEST)
        built = int(str(sess.query("SELECT count() FROM glimpse.rollup_daily", "CSV")).strip())
        if built == 0:
            print("the builds wrote no rollup rows")
            sys.exit(1)
        compared = 0
        for question in load("questions.json"):
            if not any("rollup_daily" in s for s in question["rolled"]):
                print(f"{question['name']}: the rolled form does not read the rollup")
                sys.exit(1)
            for raw, rolled in zip(question["raw"], question["rolled"]):
                try:
                    want, got = rows(sess, raw), rows(sess, rolled)
                except Exception as e:  # noqa: BLE001 - report any engine error
                    print(f"{question['name']}: {e}")
                    sys.exit(1)
                if want != got:
                    print(f"{question['name']}: rollup answer differs\n events: {want}\n rollup: {got}")
                    sys.exit(1)
                compared += len(want)
        print(
            f"OK: ClickHouse {version} (chdb) built {built} rollup rows; "
            f"{len(load('questions.json'))} questions, {compared} rows equal with and without it"
        )
    finally:
        sess.close()


if __name__ == "__main__":
    main()
