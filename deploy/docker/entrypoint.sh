#!/bin/sh
# Container entrypoint for gpuhop-gateway.
#
# GPUHOP_GATEWAY__<KEY>_FILE=/run/secrets/NAME sets GPUHOP_GATEWAY__<KEY> from
# that file (Docker and Compose secrets), so a database password stays out of
# the image, the compose file and `docker inspect`. The *_FILE variable is then
# unset: the gateway rejects [gateway] keys it does not know.
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

exec gpuhop-gateway "$@"
