"""Validates docker/compose.yml against the Compose specification without a Docker engine.

Usage: check_compose.py [COMPOSE_FILE]. Substitutes ${VAR}, ${VAR:-default} and ${VAR:?message}
as Compose does (the required variables get sample values), then parses the file with the
`compose-spec` package (a strict parser of the Compose specification that rejects unknown or
misspelt keys) and checks what Glimpse's deployment relies on. Exit status 0: valid; 1: not.
"""

import re
import sys

import compose_spec

SAMPLE = {"GLIMPSE_CLICKHOUSE_PASSWORD": "0123456789abcdef", "GLIMPSE_SITES": "example.com"}


def substitute(text):
    def value(match):
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in SAMPLE:
            return SAMPLE[name]
        if op == ":-":
            return arg
        sys.exit(f"check_compose.py: ${{{name}}} has no default and no sample value")

    return re.sub(r"\$\{([A-Za-z0-9_]+)(?:(:-|:\?)([^}]*))?\}", value, text)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "docker/compose.yml"
    text = substitute(open(path, encoding="utf-8").read())
    try:
        compose = compose_spec.PyCompose.from_yaml(text)
        compose.validate()
    except Exception as error:  # the parser's own message names the key and line
        print(f"check_compose.py: {path} is not a valid Compose file: {error}", file=sys.stderr)
        return 1
    spec = compose.to_dict()
    services = spec["services"]
    problems = []
    if set(services) != {"clickhouse", "glimpse"}:
        problems.append(f"services are {sorted(services)}, expected clickhouse and glimpse")
    glimpse = services.get("glimpse", {})
    env = glimpse.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    for name in ["GLIMPSE_CLICKHOUSE_URL", "GLIMPSE_CLICKHOUSE_PASSWORD", "GLIMPSE_SITES"]:
        if not env.get(name):
            problems.append(f"the glimpse service does not set {name}")
    if "ports" in services.get("clickhouse", {}):
        problems.append("ClickHouse publishes ports: it must be reachable from the compose network only")
    for problem in problems:
        print(f"check_compose.py: {path}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{path}: valid Compose file; services {sorted(services)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
