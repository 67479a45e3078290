#!/usr/bin/env bash
# Docker HEALTHCHECK for the Glimpse image, which has no curl or wget: a plain HTTP GET /ready
# over bash's /dev/tcp.
#
# It asks each Glimpse listener that accepts a connection: the collector (GLIMPSE_COLLECTOR_ADDR)
# and the query service (GLIMPSE_QUERY_ADDR). Healthy (exit 0) when at least one of them
# listens and every one that listens answers /ready with 200, i.e. ClickHouse is reachable and
# the migrations are applied. A listener that refuses the connection is skipped, so the same
# check fits `glimpse serve`, `glimpse collector` and `glimpse query`; under `serve`, a service
# that fails stops the whole process anyway. Reasons for failing go to stderr, which
# `docker inspect --format '{{json .State.Health}}' CONTAINER` shows.
set -u

# ready ADDR -> 0: answered 200; 1: answered something else, or nothing in time; 2: refused.
ready() {
    local addr=$1 host port connected=0 status_line=""
    port=${addr##*:}
    host=${addr%:*}
    host=${host#[}
    host=${host%]}
    # A wildcard bind address is reached through loopback (a [::] socket is dual-stack on
    # Linux, and IPv6 may be off inside the container).
    case $host in
        "" | 0.0.0.0 | ::) host=127.0.0.1 ;;
    esac
    {
        connected=1
        printf 'GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
        IFS= read -r -t 4 status_line <&3
    } 2>/dev/null 3<>"/dev/tcp/$host/$port"
    if [ "$connected" -eq 0 ]; then
        return 2
    fi
    case $status_line in
        "HTTP/1."[01]" 200"*) return 0 ;;
        *)
            echo "$addr: GET /ready: ${status_line:-no answer}" >&2
            return 1
            ;;
    esac
}

listening=0
healthy=1
for addr in "${GLIMPSE_COLLECTOR_ADDR:-127.0.0.1:8000}" "${GLIMPSE_QUERY_ADDR:-127.0.0.1:8001}"; do
    ready "$addr"
    case $? in
        0) listening=$((listening + 1)) ;;
        1)
            listening=$((listening + 1))
            healthy=0
            ;;
        *) ;;
    esac
done

if [ "$listening" -eq 0 ]; then
    echo "no Glimpse listener accepts connections" >&2
    exit 1
fi
if [ "$healthy" -eq 1 ]; then
    exit 0
fi
exit 1
