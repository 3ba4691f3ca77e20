#!/usr/bin/env bash
# Time of `pg-backup restore` of a ~100 MB plain backup (and of the same database as a custom
# archive) with two trees of this project, in alternating rounds, against the PostgreSQL of
# PGB_TEST_PG_URL. Usage: bench/plain-restore.sh OLD_TREE NEW_TREE [ROUNDS=3] [MB=100]
# Prints one line per restore: tree, format, seconds.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} mb=${4:-100}
: "${PGB_TEST_PG_URL:?load /tmp/services.sh first}"
base=${PGB_TEST_PG_URL%/*}
node=${NODE:-$new/node_modules/.bin/node}
src=bench_plain_src_$$
bucket=$(mktemp -d /tmp/pgb-bench-bucket-XXXX)
trap 'rm -rf "$bucket"; psql -q "$PGB_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $src" >/dev/null 2>&1 || true' EXIT
psql -q "$PGB_TEST_PG_URL" -c "CREATE DATABASE $src"
rows=$(( mb * 1000000 / 180 ))
psql -q "$base/$src" -c "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL); INSERT INTO big SELECT g, encode(sha512(g::text::bytea) || sha512((g + 1)::text::bytea), 'base64') FROM generate_series(1, $rows) g;"
for format in plain custom; do
  DATABASE_URL=$base/$src "$node" "$new/bin/pg-backup.js" dump --to "file://$bucket/$format" --format $format >/dev/null 2>&1
done
for round in $(seq 1 "$rounds"); do
  for tree in "$old" "$new"; do
    for format in plain custom; do
      t=bench_plain_t_$$
      psql -q "$PGB_TEST_PG_URL" -c "CREATE DATABASE $t"
      start=$(date +%s.%N)
      "$node" "$tree/bin/pg-backup.js" restore --from "file://$bucket/$format" --backup latest --target-url "$base/$t" >/dev/null 2>&1
      end=$(date +%s.%N)
      printf 'round %s  %-28s %-6s %6.2f s\n' "$round" "$(basename "$tree")" "$format" "$(echo "$end - $start" | bc)"
      psql -q "$PGB_TEST_PG_URL" -c "DROP DATABASE $t"
    done
  done
done
