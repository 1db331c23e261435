#!/bin/sh
# PostgreSQL 15 in deploy/Dockerfile's `postgres` image: on the first start,
# a cluster in $PGDATA whose `postgres` user has $POSTGRES_PASSWORD (scram)
# and a database $POSTGRES_DB; then the server in the foreground, listening
# on every address of the container.
set -eu
bin=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
    pw=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
    "$bin/initdb" -D "$PGDATA" -U postgres --pwfile="$pw" -A scram-sha-256 -E UTF8 \
        --locale=C.UTF-8 >/dev/null
    rm -f "$pw"
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "host all all ::/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
        "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "$POSTGRES_DB";
SQL
    fi
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql
