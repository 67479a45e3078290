"""Checks the compose ClickHouse's settings files against current ClickHouse via chdb.

Usage: check_clickhouse_settings.py [DIR] (default docker/clickhouse), where DIR holds
  low-memory.xml        server settings; docker/compose.yml mounts it into config.d/
  users-low-memory.xml  settings-profile settings; mounted into users.d/

ClickHouse refuses to start on an unknown profile setting, but an unknown server setting or a
misspelt `remove="1"` section is ignored without a word: a typo there would quietly leave a
cache at its default or a system log running. So, with chdb (ClickHouse 26.x in-process):
  1. every section low-memory.xml removes is a system log that current ClickHouse creates
     when it is enabled (a config enabling each, then SYSTEM FLUSH LOGS, gives system.<name>);
  2. with both files laid out as the compose file mounts them (config.d/, users.d/) over a
     config.xml that enables those logs, as the image's config.xml does: chdb starts; every
     profile setting is in system.settings and every server setting in system.server_settings,
     each with the file's value; none of the removed logs is created.
Exit status: 0 all good, 1 a problem (each one printed), 2 bad usage, 3 no chdb.
"""

import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET

try:
    import chdb
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.stderr.write(
        f"check_clickhouse_settings.py: cannot import chdb with {sys.executable} ({e}).\n"
        "Run the README's test command, scripts/test.sh: it creates .venv with chdb-core and "
        "exports GLIMPSE_TEST_PYTHON=<that venv's python>.\n"
    )
    sys.exit(3)

SERVER_FILE = "low-memory.xml"
USERS_FILE = "users-low-memory.xml"

# What chdb cannot show, each with the reason; every other section must be checkable.
# latency_log is a system log of the ClickHouse server (see its docs' system-tables page), but
# chdb's build has no such log: the name does not occur in its library.
NOT_IN_CHDB = {"latency_log": "chdb's build has no latency_log"}
# chdb sets up its own logging (system.server_settings shows chdb's logger.level, not the
# file's), so <logger> is left to the server.
UNCHECKABLE_SECTIONS = {"logger": "chdb configures its own logger"}

# The image's users.xml in brief: the `default` profile the settings go into, and a user.
BASE_USERS = """<clickhouse>
    <profiles><default/></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>::/0</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default/></quotas>
</clickhouse>
"""


def read_server_file(path):
    """(settings {name: value}, removed [section], other [section]) of low-memory.xml."""
    settings, removed, other = {}, [], []
    for element in ET.parse(path).getroot():
        if element.get("remove") is not None:
            removed.append(element.tag)
        elif len(element):
            other.append(element.tag)
        else:
            settings[element.tag] = (element.text or "").strip()
    return settings, removed, other


def read_users_file(path):
    """{profile: {setting: value}} of users-low-memory.xml; other sections are problems."""
    profiles, problems = {}, []
    for section in ET.parse(path).getroot():
        if section.tag != "profiles":
            problems.append(f"{USERS_FILE}: <{section.tag}> is not checked here; extend this script")
            continue
        for profile in section:
            profiles[profile.tag] = {s.tag: (s.text or "").strip() for s in profile}
    return profiles, problems


def config_enabling(logs, users_path):
    """A server config.xml that writes each of `logs` to system.<name>, as the image's does."""
    sections = "".join(
        f"    <{name}><database>system</database><table>{name}</table>"
        f"<flush_interval_milliseconds>100</flush_interval_milliseconds></{name}>\n"
        for name in logs
    )
    return f"<clickhouse>\n{sections}    <users_config>{users_path}</users_config>\n</clickhouse>\n"


def start(root, config_dir):
    """A chdb connection with config_dir/config.xml (and its config.d/, users.d/)."""
    data = os.path.join(root, os.path.basename(config_dir) + "-data")
    return chdb.connect(f"file:{data}?config-file={os.path.join(config_dir, 'config.xml')}")


def query(conn, sql):
    cursor = conn.cursor()
    cursor.execute(sql)
    rows = cursor.fetchall()
    cursor.close()
    return rows


def system_logs(conn, names):
    query(conn, "SYSTEM FLUSH LOGS")
    listed = ", ".join(f"'{name}'" for name in names)
    rows = query(conn, f"SELECT name FROM system.tables WHERE database = 'system' AND name IN ({listed})")
    return {row[0] for row in rows}


def write_config_dir(path, logs):
    os.makedirs(path)
    users = os.path.join(path, "users.xml")
    with open(users, "w", encoding="utf-8") as f:
        f.write(BASE_USERS)
    with open(os.path.join(path, "config.xml"), "w", encoding="utf-8") as f:
        f.write(config_enabling(logs, users))


def main():
    if len(sys.argv) > 2:
        sys.stderr.write("usage: check_clickhouse_settings.py [DIR]\n")
        return 2
    source = os.path.abspath(sys.argv[1] if len(sys.argv) == 2 else "docker/clickhouse")
    server_path, users_path = (os.path.join(source, f) for f in (SERVER_FILE, USERS_FILE))
    server_settings, removed, other = read_server_file(server_path)
    profiles, problems = read_users_file(users_path)
    for name in other:
        if name not in UNCHECKABLE_SECTIONS:
            problems.append(f"{SERVER_FILE}: <{name}> is not checked here; extend this script")
    checkable_logs = [name for name in removed if name not in NOT_IN_CHDB]

    root = tempfile.mkdtemp(prefix="glimpse-ch-settings-")
    try:
        # 1. The removed sections are system logs current ClickHouse knows.
        names_dir = os.path.join(root, "names")
        write_config_dir(names_dir, checkable_logs)
        conn = start(root, names_dir)
        query(conn, "SELECT 1")
        created = system_logs(conn, checkable_logs)
        version = query(conn, "SELECT version()")[0][0]
        conn.close()
        for name in checkable_logs:
            if name not in created:
                problems.append(
                    f"{SERVER_FILE}: <{name} remove=\"1\"/>: ClickHouse {version} has no such "
                    "system log, so the line removes nothing (misspelt?)"
                )

        # 2. The files as compose mounts them.
        compose_dir = os.path.join(root, "compose")
        write_config_dir(compose_dir, checkable_logs)
        for sub, name, path in [("config.d", SERVER_FILE, server_path), ("users.d", USERS_FILE, users_path)]:
            os.makedirs(os.path.join(compose_dir, sub))
            shutil.copy(path, os.path.join(compose_dir, sub, name))
        try:
            conn = start(root, compose_dir)
            query(conn, "SELECT 1")
        except Exception as error:  # e.g. Unknown setting 'x': while parsing profile 'default'
            problems.append(f"ClickHouse {version} does not start with these files: {error}")
            conn = None
        if conn is not None:
            known = dict(query(conn, "SELECT name, value FROM system.settings"))
            for profile, settings in profiles.items():
                for name, value in settings.items():
                    if name not in known:
                        problems.append(f"{USERS_FILE}: profile {profile}: no setting {name!r} in system.settings")
                    elif profile == "default" and known[name] != value:
                        # chdb's connection uses the default profile, so its values show.
                        problems.append(
                            f"{USERS_FILE}: profile default: {name} is {known[name]!r}, not the file's {value!r}"
                        )
            known = dict(query(conn, "SELECT name, value FROM system.server_settings"))
            for name, value in server_settings.items():
                if name not in known:
                    problems.append(f"{SERVER_FILE}: no server setting {name!r} in system.server_settings")
                elif known[name] != value:
                    problems.append(f"{SERVER_FILE}: {name} is {known[name]!r}, not the file's {value!r}")
            for name in sorted(system_logs(conn, checkable_logs)):
                problems.append(f"{SERVER_FILE}: system.{name} is still created despite remove=\"1\"")
            conn.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    for problem in problems:
        print(f"check_clickhouse_settings.py: {problem}", file=sys.stderr)
    if problems:
        return 1
    profile_count = sum(len(s) for s in profiles.values())
    print(
        f"ClickHouse {version} (chdb): {profile_count} profile settings and {len(server_settings)} "
        f"server settings exist and take the files' values; {len(checkable_logs)} system logs "
        "exist and are removed"
    )
    for name, reason in {**NOT_IN_CHDB, **UNCHECKABLE_SECTIONS}.items():
        if name in removed or name in other:
            print(f"not checked: <{name}> ({reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
