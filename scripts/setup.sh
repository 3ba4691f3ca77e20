#!/usr/bin/env bash
# Installs what pg-backup needs on a Debian/Ubuntu machine, then the npm packages.
#   scripts/setup.sh         PostgreSQL (client, and server binaries for throwaway drill clusters) + zstd
#   scripts/setup.sh test    also Ceph RGW (the S3 server the tests run against), the AWS CLI, promtool, Pushgateway and Chromium
# Safe to run again: packages already installed are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(postgresql zstd ca-certificates util-linux)
if [ "${1:-}" = "test" ]; then
  # postgresql-15-postgis-3: the upgrade-rehearsal test drills a PostGIS database (test/integration/majors.test.ts);
  # the other majors' server binaries are fetched by that test from npm into the download cache.
  # sudo: test/integration/cluster-isolation.test.ts runs drills as an unprivileged user with passwordless sudo (as on GitHub-hosted runners).
  packages+=(ceph-mon ceph-osd radosgw ceph-common awscli curl age strace prometheus prometheus-pushgateway pgbackrest openssl postgresql-15-postgis-3 sudo)
  # pgbouncer: the connection diagnosis tests run a pooler in transaction and in session mode
  # (test/integration/diagnose.test.ts); openssh-server: the --ssh-tunnel tests run their own sshd
  # (test/integration/ssh-tunnel.test.ts). Both on 127.0.0.1 on a free port, started by the tests.
  packages+=(pgbouncer openssh-server openssh-client iproute2)
  # The status page test opens the page in headless Chromium (Debian: chromium; GitHub's Ubuntu images ship google-chrome).
  command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || packages+=(chromium)
fi
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  # The postgresql package starts a cluster of its own; pg-backup does not need it, so keep it off.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # pgbouncer and openssh-server come with system services (ports 6432 and 22) that the tests do
  # not use: where the install started them, stop and disable them, so nothing holds those ports.
  for service in pgbouncer ssh; do
    if [[ " ${missing[*]} " == *" ${service/ssh/openssh-server} "* ]]; then
      if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
      elif command -v service >/dev/null 2>&1; then
        $SUDO service "$service" stop >/dev/null 2>&1 || true
      fi
    fi
  done
fi
# pg-backup and its packages run on Node.js 24, which npm ci installs into node_modules/.bin
# (the `node` devDependency). Debian and Ubuntu ship an older Node (20): npm running on it would
# check every package's engines against that Node and print an EBADENGINE warning for each one
# that needs 22 or 24, about Node that never runs them. So on an older Node, npm itself runs on
# the pinned Node 24 (fetched by npm exec into the npm cache, the same one npm ci installs).
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 24 ]; then
  pinned=$(node -p 'require("./package.json").devDependencies.node')
  echo "Node.js $(node --version) here; installing with Node $pinned, the one pg-backup runs on (node_modules/.bin/node)"
  npm exec --yes --package="node@$pinned" -- node "$(readlink -f "$(command -v npm)")" ci --no-audit --no-fund
else
  npm ci --no-audit --no-fund
fi
