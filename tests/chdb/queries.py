"""Runs every SQL statement the stats API generates on current ClickHouse via chdb.

Usage: queries.py DIR, where DIR (written by tests/stats_sql_compat.rs) holds
  schema.json      the migration statements (modern flavor), a JSON list of strings, in order
  statements.json  the stats statements, exactly as the clickhouse crate sends them (values
                   inlined by its escaping), a JSON list of strings
A few events are inserted first so that the statements aggregate real rows. Exit status: 0 all
ran, 1 one failed (the statement and ClickHouse's message are printed), 2 bad usage, 3 no chdb.
"""

import json
import os
import sys

try:
    from chdb import session as chs
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.stderr.write(
        f"queries.py: cannot import chdb with {sys.executable} ({e}).\n"
        "Run the README's test command, scripts/test.sh: it creates .venv with chdb-core and "
        "exports GLIMPSE_TEST_PYTHON=<that venv's python>.\n"
    )
    sys.exit(3)

EVENTS = """INSERT INTO glimpse.events
(site, timestamp, name, hostname, pathname, referrer, referrer_source, utm_source, utm_campaign,
 visitor_id, session_id, browser, browser_version, os, device, country, city, interactive,
 scroll_depth, engagement_ms, prop_keys, prop_values) VALUES
('example.com', toDateTime('2026-03-29 00:30:00', 'UTC'), 'pageview', 'example.com', '/a',
 'google.com/', 'Google', '', '', 1, 11, 'Firefox', '128', 'GNU/Linux', 'desktop', 'DE', 'Berlin', 1, 0, 0, [], []),
('example.com', toDateTime('2026-03-29 00:31:00', 'UTC'), 'engagement', 'example.com', '/a',
 '', '', '', '', 1, 11, 'Firefox', '128', 'GNU/Linux', 'desktop', 'DE', 'Berlin', 1, 80, 30000, [], []),
('example.com', toDateTime('2026-03-29 01:10:00', 'UTC'), 'pageview', 'example.com', '/b',
 '', '', '', '', 1, 11, 'Firefox', '128', 'GNU/Linux', 'desktop', 'DE', 'Berlin', 1, 0, 0, [], []),
('example.com', toDateTime('2026-03-28 12:00:00', 'UTC'), 'pageview', 'example.com', '/',
 '', 'newsletter', 'newsletter', 'spring', 2, 22, 'Chrome', '131', 'Android', 'mobile', 'FR', 'Paris', 1, 0, 0, [], []),
('example.com', toDateTime('2026-03-28 12:01:00', 'UTC'), 'Signup', 'example.com', '/',
 '', '', '', '', 2, 22, 'Chrome', '131', 'Android', 'mobile', 'FR', 'Paris', 1, 0, 0, ['plan'], ['pro'])
"""

IMPORTED = """INSERT INTO glimpse.imported_daily
(site, import_id, date, kind, page, entry_page, exit_page, source, utm_source, country, region,
 device, browser, browser_version, os, os_version, name, visitors, visits, pageviews, bounces,
 visit_duration, events) VALUES
('example.com', 1, '2026-03-10', 'visitors', '', '', '', '', '', '', '', '', '', '', '', '', '', 10, 12, 30, 5, 600, 0),
('example.com', 1, '2026-03-10', 'sources', '', '', '', 'Google', 'google', '', '', '', '', '', '', '', '', 4, 5, 9, 2, 200, 0),
('example.com', 1, '2026-03-10', 'pages', '/a', '', '', '', '', '', '', '', '', '', '', '', '', 6, 7, 20, 0, 0, 0),
('example.com', 1, '2026-03-10', 'entry_pages', '', '/a', '', '', '', '', '', '', '', '', '', '', '', 6, 7, 20, 3, 300, 0),
('example.com', 1, '2026-03-10', 'exit_pages', '', '', '/b', '', '', '', '', '', '', '', '', '', '', 6, 7, 20, 3, 300, 0),
('example.com', 1, '2026-03-10', 'locations', '', '', '', '', '', 'DE', 'DE-BE', '', '', '', '', '', '', 3, 3, 6, 1, 90, 0),
('example.com', 1, '2026-03-10', 'devices', '', '', '', '', '', '', '', 'mobile', '', '', '', '', '', 3, 3, 6, 1, 90, 0),
('example.com', 1, '2026-03-10', 'browsers', '', '', '', '', '', '', '', '', 'Firefox', '128', '', '', '', 3, 3, 6, 1, 90, 0),
('example.com', 1, '2026-03-10', 'operating_systems', '', '', '', '', '', '', '', '', '', '', 'Linux', '', '', 3, 3, 6, 1, 90, 0),
('example.com', 1, '2026-03-10', 'custom_events', '', '', '', '', '', '', '', '', '', '', '', '', 'Signup', 2, 0, 0, 0, 0, 3)
"""

DROPPED = """INSERT INTO glimpse.dropped_events (site, date, reason, count) VALUES
('example.com', '2026-03-28', 'bot', 3)"""


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: queries.py DIR\n")
        sys.exit(2)
    dir_path = os.path.abspath(sys.argv[1])
    with open(os.path.join(dir_path, "schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    with open(os.path.join(dir_path, "statements.json"), encoding="utf-8") as f:
        statements = json.load(f)

    sess = chs.Session(os.path.join(dir_path, "chdb-session"))
    try:
        version = str(sess.query("SELECT version()", "CSV")).strip().strip('"')
        for statement in schema:
            sess.query(statement)
        sess.query(EVENTS)
        sess.query(DROPPED)
        sess.query(IMPORTED)
        rows = 0
        for i, statement in enumerate(statements):
            try:
                result = sess.query(statement, "JSONEachRow")
            except Exception as e:  # chdb raises a plain RuntimeError with the server's message
                sys.stderr.write(
                    f"queries.py: FAIL: statement {i + 1} of {len(statements)} was rejected by "
                    f"ClickHouse {version}:\n{statement}\n--> {e}\n"
                )
                sys.exit(1)
            text = result.bytes().decode("utf-8") if hasattr(result, "bytes") else str(result)
            rows += sum(1 for line in text.splitlines() if line.strip())
    finally:
        sess.close()
    print(
        f"OK: ClickHouse {version} (chdb) ran all {len(statements)} stats statements "
        f"({rows} result rows)"
    )


if __name__ == "__main__":
    main()
