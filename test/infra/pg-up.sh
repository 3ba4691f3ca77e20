#!/bin/bash
# Starts a throwaway PostgreSQL cluster for the test suite (Debian's postgresql package).
# Usage: D=/tmp/pgtest PG_PORT=55432 test/infra/pg-up.sh   -> prints "PG UP on 127.0.0.1:PORT"
# Superuser "postgres" with password "pgtestpw" over TCP (scram), loopback only.
# initdb refuses to run as root: as root, the cluster runs as the "postgres" OS user.
# Stop: pg_ctl -D $D/data stop -m immediate (or kill the pid in $D/data/postmaster.pid).
set -euo pipefail
D=${D:-/tmp/pgtest}
PORT=${PG_PORT:-55432}
BIN=${PG_BIN_DIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$BIN/initdb" ] || { echo "no initdb found (install Debian's postgresql package)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ -f "$D/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$D/data" stop -m immediate >/dev/null 2>&1 || true; fi
rm -rf "$D"; mkdir -p "$D"
[ "$(id -u)" = 0 ] && chown postgres: "$D"
echo pgtestpw > "$D/pw"; [ "$(id -u)" = 0 ] && chown postgres: "$D/pw"
as_pg "$BIN/initdb" -D "$D/data" -U postgres --pwfile="$D/pw" -A scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
as_pg "$BIN/pg_ctl" -D "$D/data" -l "$D/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $D -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >/dev/null
echo "PG UP on 127.0.0.1:$PORT"
