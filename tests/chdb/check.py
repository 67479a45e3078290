"""Runs Glimpse's schema DDL and one captured batch insert on current ClickHouse via chdb.

Usage: check.py DIR, where DIR (written by tests/clickhouse_compat.rs) holds
  schema.json    the migration statements, a JSON list of strings, in order
  insert.json    {"database", "query", "columns", "url_params"} of the clickhouse crate's INSERT
  batch.bin      the request body the crate sent: RowBinary rows, uncompressed
  expected.json  the rows written, a JSON list of objects keyed by column

The captured INSERT statement is run as sent, with only `FROM INFILE '<DIR>/batch.bin'` added
before its FORMAT clause, so ClickHouse parses the very bytes the crate produced with the very
column list it named. Exit status: 0 all good, 1 a mismatch or error, 2 bad usage, 3 no chdb.
"""

import datetime
import json
import os
import re
import sys

try:
    from chdb import session as chs
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.stderr.write(
        f"check.py: cannot import chdb with {sys.executable} ({e}).\n"
        "Run the README's test command, scripts/test.sh: it creates .venv with chdb-core and "
        "exports GLIMPSE_TEST_PYTHON=<that venv's python>.\n"
    )
    sys.exit(3)


def fail(message):
    sys.stderr.write(f"check.py: FAIL: {message}\n")
    sys.exit(1)


def sql_string(text):
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def load(dir_path, name):
    with open(os.path.join(dir_path, name), encoding="utf-8") as f:
        return json.load(f)


def query(sess, sql, fmt="CSV"):
    try:
        return sess.query(sql, fmt)
    except Exception as e:  # chdb raises a plain RuntimeError carrying the server's message
        fail(f"ClickHouse rejected:\n{sql}\n--> {e}")


def json_rows(result):
    text = result.bytes().decode("utf-8") if hasattr(result, "bytes") else str(result)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: check.py DIR\n")
        sys.exit(2)
    dir_path = os.path.abspath(sys.argv[1])
    statements = load(dir_path, "schema.json")
    insert = load(dir_path, "insert.json")
    expected = load(dir_path, "expected.json")
    batch = os.path.join(dir_path, "batch.bin")
    database = insert["database"]
    columns = insert["columns"]

    sess = chs.Session(os.path.join(dir_path, "chdb-session"))
    try:
        version = str(query(sess, "SELECT version()")).strip().strip('"')
        print(f"ClickHouse (chdb) version: {version}")

        # Twice: migrations may run more than once, so every statement must be repeatable.
        for round_no in (1, 2):
            for statement in statements:
                query(sess, statement)
            print(f"DDL round {round_no}: {len(statements)} statements OK")

        # The crate names every column of the table, in the table's order.
        described = json_rows(
            query(sess, f"DESCRIBE TABLE {database}.events", "JSONEachRow")
        )
        table_columns = [c["name"] for c in described]
        if table_columns != columns:
            fail(
                "the INSERT's columns differ from the table's:\n"
                f"  insert: {columns}\n  table:  {table_columns}"
            )
        types = {c["name"]: c["type"] for c in described}

        # The statement exactly as the crate sent it, against the database it named in the URL.
        match = re.fullmatch(r"(INSERT INTO .+\))\s+(FORMAT RowBinary)\s*", insert["query"], re.S)
        if not match:
            fail(f"unexpected INSERT statement: {insert['query']!r}")
        query(sess, f"USE {database}")
        query(sess, f"{match.group(1)} FROM INFILE {sql_string(batch)} {match.group(2)}")

        # DateTime columns go back out as Unix seconds, compared with the u32 written;
        # `timestamp` is also rendered in UTC and checked against Python's reading of those
        # seconds. (Aliasing an expression as its column would shadow the column for later
        # uses.)
        select = ", ".join(
            f"toUnixTimestamp(`{c}`) AS `{c}_unix`" if types[c].startswith("DateTime") else f"`{c}`"
            for c in columns
        )
        actual = json_rows(
            query(
                sess,
                f"SELECT {select}, toString(timestamp, 'UTC') AS timestamp_utc "
                f"FROM {database}.events "
                "SETTINGS output_format_json_quote_64bit_integers = 0",
                "JSONEachRow",
            )
        )
    finally:
        sess.close()

    rendered = {}
    for row in actual:
        text = row.pop("timestamp_utc")
        for column in [c for c in row if c.endswith("_unix")]:
            row[column[: -len("_unix")]] = row.pop(column)
        if "timestamp" in row:
            rendered[row["timestamp"]] = text

    problems = []
    if len(actual) != len(expected):
        problems.append(f"row count: expected {len(expected)}, read back {len(actual)}")
    for row in expected:
        if list(row) != columns:
            problems.append(f"expected.json keys {list(row)} are not the INSERT's columns")
            break

    # The table's ORDER BY reorders rows: pair each expected row with the unpaired row read back
    # that agrees with it on the most columns, then report every column that differs.
    # ClickHouse renders unsigned ints as JSON numbers (64-bit ones because of the setting above),
    # strings as strings and Array(String) as lists, so values compare with their Python type.
    def same(w, g):
        return type(w) is type(g) and w == g

    unpaired = list(actual)
    for i, want in enumerate(expected):
        if not unpaired:
            break
        got = max(unpaired, key=lambda g: sum(same(want.get(c), g.get(c)) for c in columns))
        unpaired.remove(got)
        for column in columns:
            w, g = want.get(column), got.get(column)
            if not same(w, g):
                problems.append(
                    f"row {i} column {column} ({types.get(column)}): "
                    f"expected {w!r}, read back {g!r}"
                )
    for ts, text in rendered.items():
        want = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        if text != want:
            problems.append(f"DateTime {ts} rendered in UTC as {text!r}, expected {want!r}")

    if problems:
        fail(
            f"{len(problems)} mismatch(es) between the rows written and ClickHouse {version}:\n  "
            + "\n  ".join(problems)
        )
    print(
        f"OK: ClickHouse {version} ran {len(statements)} DDL statements twice and read back "
        f"{len(actual)} rows x {len(columns)} columns from {os.path.getsize(batch)} bytes of "
        "RowBinary, all equal to the rows written"
    )


if __name__ == "__main__":
    main()
