# Sourced by scripts/pg_test.sh and scripts/store_bench.sh: a throwaway
# PostgreSQL cluster on 127.0.0.1, on a free port, in a temp dir.
#
#   pg_cluster_start [postgres -c options...]   # sets PG_SERVER_URL, PG_PORT
# installs PostgreSQL from Debian's packages when missing (as root), and
# installs an EXIT trap that stops the cluster it started and removes the
# temp dir (nothing else is touched).

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

pg_cluster_start() {
    if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "PostgreSQL is not installed and this is not root." >&2
            echo "  Install it (sudo apt-get install -y postgresql) and run again." >&2
            exit 1
        fi
        echo "== installing PostgreSQL (apt-get install -y postgresql)"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y --no-install-recommends postgresql >/dev/null 2>&1; then
            apt-get update -qq
            apt-get install -y --no-install-recommends postgresql >/dev/null
        fi
    fi
    PGBIN=$(pg_bin)
    # A free loopback port: a random one nothing answers on (no python
    # needed on a fresh machine).
    local tries=0
    while :; do
        PG_PORT=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; then
            break
        fi
        tries=$((tries + 1))
        if [ "$tries" -ge 50 ]; then
            echo "no free port found" >&2
            exit 1
        fi
    done
    PGD=$(mktemp -d /tmp/llmtap-pg.XXXXXX)
    chmod 755 "$PGD"
    # As root the server runs as the `postgres` user; otherwise as ourselves.
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$PGD"
        as_pg() { runuser -u postgres -- "$@"; }
    else
        as_pg() { "$@"; }
    fi
    PG_STARTED=0
    trap pg_cluster_stop EXIT
    as_pg "$PGBIN/initdb" -D "$PGD/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
    local opts="-h 127.0.0.1 -p $PG_PORT -k $PGD -c max_connections=300"
    local o
    for o in "$@"; do opts="$opts -c $o"; done
    as_pg "$PGBIN/pg_ctl" -D "$PGD/data" -l "$PGD/log" -w -o "$opts" start >/dev/null
    PG_STARTED=1
    PG_SERVER_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    echo "== PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($PGD)"
}

pg_cluster_stop() {
    if [ "${PG_STARTED:-0}" -eq 1 ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGD/data" -m immediate -w stop >/dev/null 2>&1 || true
        PG_STARTED=0
    fi
    [ -n "${PGD:-}" ] && rm -rf "$PGD"
}

# A new empty database on the cluster; prints its URL.
pg_create_database() {
    as_pg "$PGBIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE $1" >/dev/null
    echo "postgres://postgres@127.0.0.1:$PG_PORT/$1"
}
