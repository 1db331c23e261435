# Shared by tests/run.sh (the test command) and deploy/run.sh (the run
# command). Sourced, not run.

CARDGATE_PACKAGES=(build-essential cmake pkg-config libevent-dev libcurl4-openssl-dev libssl-dev
    libjson-c-dev libpq-dev check libinih-dev libyaml-dev postgresql-15 postgresql-client-15 curl openssl haproxy
    ca-certificates tzdata)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages that are missing (none installed: no apt at all).
install_deps() {
    local missing=()
    for p in "${CARDGATE_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

PG_BIN=/usr/lib/postgresql/15/bin

# Runs a PostgreSQL server command as the cluster's owner: PostgreSQL
# refuses to run as root, so root hands it to the postgres user.
pg_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A loopback port below 32768 (32768-60999 belong to outgoing connections)
# that nothing listens on.
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# start_pg DIR PORT: initialises (once) and starts a private cluster in DIR
# listening on 127.0.0.1:PORT, trust auth for local connections.
start_pg() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        pg_as_owner "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
    fi
    pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" start >/dev/null
}

stop_pg() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] && pg_as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
