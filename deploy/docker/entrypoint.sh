#!/bin/sh
# Container entrypoint for gpuhop-gateway.
#
# GPUHOP_GATEWAY__<KEY>_FILE=/run/secrets/NAME sets GPUHOP_GATEWAY__<KEY> from
# that file (Docker and Compose secrets), so a database password stays out of
# the image, the compose file and `docker inspect`. The *_FILE variable is then
# unset: the gateway rejects [gateway] keys it does not know.
#
# GPUHOP_DB_UPGRADE=1 runs `gpuhop-gateway db upgrade` (same --config) before
# `serve`, for a single gateway; with replicas, run it once as its own step.
set -eu

for var in $(env | sed -n 's/^\(GPUHOP_GATEWAY__[A-Z0-9_]*\)_FILE=.*/\1/p'); do
    file=$(printenv "${var}_FILE")
    if [ ! -r "$file" ]; then
        echo "gpuhop-entrypoint: ${var}_FILE: cannot read ${file}" >&2
        exit 78
    fi
    # $(...) drops trailing newlines, as secret files usually end with one.
    value=$(cat "$file")
    export "${var}=${value}"
    unset "${var}_FILE"
done

if [ "${GPUHOP_DB_UPGRADE:-0}" = 1 ] && [ "${1-}" = serve ]; then
    config=${GPUHOP_CONFIG:-/etc/gpuhop/gateway.toml}
    previous=
    for arg in "$@"; do
        if [ "$previous" = --config ]; then config=$arg; fi
        case $arg in --config=*) config=${arg#--config=} ;; esac
        previous=$arg
    done
    gpuhop-gateway db upgrade --config "$config"
fi

exec gpuhop-gateway "$@"
