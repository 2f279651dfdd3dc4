#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (scripts/test uses it to set
# CALLROUTER_TEST_POSTGRES).  Debian's server binaries, a fresh cluster in DIR,
# trust authentication for 127.0.0.1 only, listening only on 127.0.0.1 on a free
# port, its unix socket inside DIR.  fsync is off: the data is thrown away anyway.
#
#   scripts/postgres.sh start DIR [OWNER_PID]   prints the SQLAlchemy URL on stdout
#   scripts/postgres.sh stop DIR                stops the server and deletes DIR
#
# DIR must be a new, empty directory (scripts/test makes one with mktemp under
# .cache/).  OWNER_PID is the process the cluster belongs to: `start` first removes
# clusters beside DIR whose owner has died (a test run killed with SIGKILL).
# As root the server runs as the `postgres` system user (it refuses to run as
# root); otherwise as the calling user.  Without the server binaries, root installs
# Debian's `postgresql` package.  Messages go to stderr; on failure the last lines
# of the server's log say why.
set -euo pipefail

DATABASE=callrouter_test
MARKER=.callrouter-test-postgres

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# The newest installed server version's bin directory, or nothing.
find_bindir() {
    local postgres
    postgres="$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$postgres" ] && dirname "$postgres"
    return 0
}

install_server() {
    [ "$(id -u)" = 0 ] || die "no PostgreSQL server in /usr/lib/postgresql/*/bin and not root: \
install Debian's postgresql package"
    command -v apt-get >/dev/null || die "no PostgreSQL server and no apt-get to install one"
    say "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends postgresql >&2; then
        apt-get update -qq >&2 || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends postgresql >&2 \
            || die "apt-get install postgresql failed"
    fi
}

# Run a server program as the user the cluster belongs to.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Stop the cluster in $1 (if it runs) and delete $1 (only if it is one of ours).
remove_cluster() {
    local dir="$1" bindir
    [ -f "$dir/$MARKER" ] || { say "$dir is not a test cluster; leaving it alone"; return 0; }
    bindir="$(cat "$dir/bindir" 2>/dev/null || true)"
    if [ -n "$bindir" ] && [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf -- "$dir"
}

# Clusters beside $1 whose owner process is gone.
remove_stale_beside() {
    local dir="$1" other owner
    for other in "$(dirname "$dir")"/postgres.*; do
        [ -d "$other" ] && [ "$other" != "$dir" ] && [ -f "$other/$MARKER" ] || continue
        owner="$(cat "$other/owner" 2>/dev/null || true)"
        if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
            say "removing the stale cluster $other (its test run $owner is gone)"
            remove_cluster "$other"
        fi
    done
}

start() {
    local dir="$1" owner="${2:-}" bindir user port attempt
    [ -d "$dir" ] || die "$dir is not a directory"
    [ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
    dir="$(cd "$dir" && pwd)"
    : > "$dir/$MARKER"
    [ -z "$owner" ] || echo "$owner" > "$dir/owner"
    remove_stale_beside "$dir"

    bindir="$(find_bindir)"
    if [ -z "$bindir" ]; then
        install_server
        bindir="$(find_bindir)"
        [ -n "$bindir" ] || die "installed postgresql, but found no /usr/lib/postgresql/*/bin/postgres"
    fi
    echo "$bindir" > "$dir/bindir"

    if [ "$(id -u)" = 0 ]; then
        getent passwd postgres >/dev/null || die "there is no postgres system user"
        user=postgres
        chmod 711 "$dir"  # mktemp -d made it 700; the data directory stays 700
        mkdir "$dir/data"
        chown postgres: "$dir/data"
        as_owner test -x "$dir/data" \
            || die "the postgres user cannot reach $dir (a parent directory is not searchable)"
    else
        user="$(id -un)"
        mkdir "$dir/data"
    fi
    chmod 700 "$dir/data"

    as_owner "$bindir/initdb" -D "$dir/data" -U "$user" --auth=trust --no-sync \
        -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed"; }
    # Only TCP from 127.0.0.1 (trust) and the owner over the unix socket.
    printf '%s\n' \
        "local all $user     peer" \
        "host  all all 127.0.0.1/32 trust" > "$dir/data/pg_hba.conf"

    # The port is free when picked and taken a moment later; another process may get
    # there first, so try a few.
    for attempt in 1 2 3; do
        port="$(free_port)"
        if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/data -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            start >/dev/null; then
            break
        fi
        say "the server did not start on port $port (attempt $attempt):"
        tail -n 5 "$dir/data/server.log" >&2 || true
        port=""
    done
    [ -n "$port" ] || die "PostgreSQL did not start; see above"

    as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$DATABASE" \
        || die "createdb $DATABASE failed"
    say "PostgreSQL $("$bindir/postgres" -V | awk '{print $3}') on 127.0.0.1:$port ($dir)"
    echo "postgresql+asyncpg://$user@127.0.0.1:$port/$DATABASE"
}

case "${1:-}" in
    start)
        [ $# -ge 2 ] || die "usage: $0 start DIR [OWNER_PID]"
        start "$2" "${3:-}"
        ;;
    stop)
        [ $# -eq 2 ] || die "usage: $0 stop DIR"
        [ ! -e "$2" ] || remove_cluster "$2"
        ;;
    *)
        die "usage: $0 start DIR [OWNER_PID] | stop DIR"
        ;;
esac
