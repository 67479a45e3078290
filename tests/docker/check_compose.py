"""Validates docker/compose.yml against the Compose specification without a Docker engine.

Usage: check_compose.py [--glimpse-env] [COMPOSE_FILE] (default docker/compose.yml).

Substitutes ${VAR}, ${VAR:-default} and ${VAR:?message} as Compose does (the required variables
get sample values), then parses the file with the `compose-spec` package (a strict parser of
the Compose specification that rejects unknown or misspelt keys) and checks what Glimpse's
deployment relies on. Exit status 0: valid; 1: not.

--glimpse-env prints, as JSON, what the `glimpse` container's process gets instead:
  environment  the ENV of the Dockerfile's last stage (the one the service's `build:` names)
               overlaid by the service's `environment:`
  command      ENTRYPOINT + CMD, or what the service's `entrypoint:` / `command:` make of them
  working_dir, user   WORKDIR and USER, or the service's `working_dir:` / `user:`
  stop_signal, stop_grace_period_seconds   what `docker compose stop` sends, and how long
               it waits before SIGKILL (STOPSIGNAL or `stop_signal:`; `stop_grace_period:`)
  clickhouse_environment   the clickhouse service's `environment:` (its user, password, database)
  dockerfile   the Dockerfile read, as an absolute path
In this mode variables set in this script's environment take precedence over the sample
values and the defaults, as they do for `docker compose`; docker/.env is not read. What the
base image sets (PATH in debian:bookworm-slim) and what Docker adds at run time (HOSTNAME,
HOME) are not in these files and not printed.
"""

import argparse
import json
import os
import re
import shlex
import sys

import compose_spec

SAMPLE = {"GLIMPSE_CLICKHOUSE_PASSWORD": "0123456789abcdef", "GLIMPSE_SITES": "example.com"}


def fail(message):
    sys.exit(f"check_compose.py: {message}")


def substitute(text, variables=SAMPLE):
    def value(match):
        name, op, arg = match.group(1), match.group(2), match.group(3)
        # Compose: `:-` and `:?` treat an empty value like an unset one.
        if variables.get(name):
            return variables[name]
        if op == ":-":
            return arg
        if op is None and name in variables:
            return variables[name]
        if name in variables:
            fail(f"${{{name}}} is empty; Compose would stop: {arg}")
        fail(f"${{{name}}} has no default and no sample value")

    return re.sub(r"\$\{([A-Za-z0-9_]+)(?:(:-|:\?)([^}]*))?\}", value, text)


def load(path, variables=SAMPLE):
    """The Compose file after substitution, validated, as a dict; exits 1 if it is invalid."""
    text = substitute(open(path, encoding="utf-8").read(), variables)
    try:
        compose = compose_spec.PyCompose.from_yaml(text)
        compose.validate()
    except Exception as error:  # the parser's own message names the key and line
        print(f"check_compose.py: {path} is not a valid Compose file: {error}", file=sys.stderr)
        sys.exit(1)
    return compose.to_dict()


def service_environment(service, host_env):
    """A service's `environment:` as a dict; a bare name takes the host's value, as in Compose."""
    if service.get("env_file"):
        fail("env_file is not supported: list the variables under environment:")
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    result = {}
    for name, value in env.items():
        if value is None:
            if name in host_env:
                result[name] = host_env[name]
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        result[name] = str(value)
    return result


def dockerfile_stages(text):
    """[(base, name, [(INSTRUCTION, arguments)])] per FROM, with comment lines dropped and
    `\\` continuations joined as Docker does (the backslash and newline removed)."""
    if re.match(r"\s*#\s*escape\s*=", text):
        fail("the Dockerfile sets a parser `escape` directive, which is not supported")
    stages, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and pending):
            continue  # comments and empty lines, also inside a continuation
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        line, pending = pending + line, ""
        if not line.strip():
            continue
        word, args = (line.split(None, 1) + [""])[:2]
        word, args = word.upper(), args.strip()
        if word == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append((parts[0], name, []))
        elif stages:
            stages[-1][2].append((word, args))
    if pending:
        fail("the Dockerfile ends inside a `\\` continuation")
    if not stages:
        fail("the Dockerfile has no FROM")
    return stages


def env_pairs(args):
    """ENV KEY=VALUE ... (quotes as in a shell) or the legacy ENV KEY VALUE."""
    first = args.split(None, 1)
    if "=" not in first[0]:
        return [(first[0], first[1] if len(first) > 1 else "")]
    pairs = []
    for token in shlex.split(args):
        if "=" not in token:
            fail(f"cannot read ENV {args!r}")
        pairs.append(tuple(token.split("=", 1)))
    return pairs


def exec_form(args):
    """An ENTRYPOINT or CMD argument list: the JSON form as is, the shell form under sh -c."""
    if args.startswith("["):
        return json.loads(args)
    return ["/bin/sh", "-c", args]


def image_config(stages):
    """ENV, ENTRYPOINT, CMD, WORKDIR and USER of the last stage, including what it inherits
    from an earlier stage it is built FROM (but not from an external base image)."""
    by_name = {stage[1]: stage for stage in stages if stage[1]}

    def chain(stage):
        base = by_name.get(stage[0])
        return (chain(base) if base else []) + stage[2]

    config = {
        "environment": {},
        "entrypoint": None,
        "cmd": None,
        "working_dir": None,
        "user": None,
        "stop_signal": None,
    }
    for word, args in chain(stages[-1]):
        if word == "ENV":
            for key, value in env_pairs(args):
                if "$" in value:
                    fail(f"ENV {key} uses variable substitution, which is not supported here")
                config["environment"][key] = value
        elif word == "ENTRYPOINT":
            config["entrypoint"] = exec_form(args)
        elif word == "CMD":
            config["cmd"] = exec_form(args)
        elif word == "WORKDIR":
            if not args.startswith("/"):
                fail(f"WORKDIR {args}: only absolute directories are supported here")
            config["working_dir"] = args
        elif word == "USER":
            config["user"] = args
        elif word == "STOPSIGNAL":
            config["stop_signal"] = args
    if config["entrypoint"] is None and config["cmd"] is None:
        fail("the Dockerfile's last stage sets neither ENTRYPOINT nor CMD")
    return config


def seconds(duration):
    """A Compose duration (`40s`, `1m30s`, `1.5s`) in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        fail(f"cannot read the duration {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def command_list(value):
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def glimpse_env(path):
    """What the glimpse container's process gets, as a dict (see the module doc)."""
    host_env = dict(os.environ)
    spec = load(path, {**SAMPLE, **host_env})
    service = spec["services"].get("glimpse")
    if service is None:
        fail(f"{path} has no glimpse service")
    build = service.get("build")
    if not build:
        fail("the glimpse service has no build: section naming the Dockerfile")
    if isinstance(build, str):
        build = {"context": build}
    context = os.path.join(os.path.dirname(os.path.abspath(path)), build.get("context", "."))
    dockerfile = os.path.normpath(os.path.join(context, build.get("dockerfile", "Dockerfile")))
    with open(dockerfile, encoding="utf-8") as f:
        image = image_config(dockerfile_stages(f.read()))

    environment = {**image["environment"], **service_environment(service, host_env)}
    for name, value in environment.items():
        if "$" in value:
            fail(f"{name}={value!r}: a variable form this script does not substitute")
    # Compose: `entrypoint:` replaces the image's ENTRYPOINT and drops its CMD;
    # `command:` replaces CMD.
    entrypoint, cmd = image["entrypoint"] or [], image["cmd"] or []
    if service.get("entrypoint") is not None:
        entrypoint, cmd = command_list(service["entrypoint"]), []
    if service.get("command") is not None:
        cmd = command_list(service["command"])
    return {
        "environment": environment,
        "command": entrypoint + cmd,
        "working_dir": service.get("working_dir", image["working_dir"]),
        "user": service.get("user", image["user"]),
        # Docker's defaults: SIGTERM, then SIGKILL after 10 s.
        "stop_signal": service.get("stop_signal", image["stop_signal"] or "SIGTERM"),
        "stop_grace_period_seconds": seconds(service.get("stop_grace_period", "10s")),
        "clickhouse_environment": service_environment(spec["services"].get("clickhouse", {}), host_env),
        "dockerfile": dockerfile,
    }


def validate(path):
    spec = load(path)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("compose_file", nargs="?", default="docker/compose.yml")
    parser.add_argument(
        "--glimpse-env",
        action="store_true",
        help="print the glimpse container's environment and command as JSON",
    )
    args = parser.parse_args()
    if args.glimpse_env:
        print(json.dumps(glimpse_env(args.compose_file), indent=2, sort_keys=True))
        return 0
    return validate(args.compose_file)


if __name__ == "__main__":
    sys.exit(main())
