#!/usr/bin/env bash
# Usage: scripts/check-compose.sh [COMPOSE_FILE]   (default: docker-compose.yml)
# Validates docker-compose.yml without a container engine (none runs on the development
# machines or in CI): `config -q` parses, interpolates and schema-checks the file and exits
# non-zero when it is invalid. The required secrets get dummy values for the check.
#
# The client, installed when missing (idempotent; a second run installs nothing):
#   1. `docker compose` (the Compose v2 plugin) when the docker CLI already has it;
#   2. else the same plugin from Debian's own `docker-compose` package of the next release
#      (trixie: Compose 2.x, a Go program needing only libc), unpacked under
#      .state/compose/ and nowhere else: the system's apt sources and packages are not
#      changed. Run as `docker compose` when the docker CLI is installed, else directly;
#   3. else (that package cannot be had) Debian 12's `docker-compose` (Compose 1.29, v1),
#      installed with apt-get: `docker-compose config -q`.
# FLOWBILL_COMPOSE_SUITE names another Debian release for step 2; FLOWBILL_COMPOSE_V1=1 skips
# step 2.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$REPO/.state"
DIR="$STATE/compose"
PLUGIN="$DIR/docker-config/cli-plugins/docker-compose"
SUITE=${FLOWBILL_COMPOSE_SUITE:-trixie}
export DEBIAN_FRONTEND=noninteractive

msg() { printf 'check-compose: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# Step 2: fetch Debian's docker-compose (v2) .deb through a private apt configuration under
# .state/compose/apt that lists only that release's binary packages, from the mirror this
# machine's apt configuration already uses (scripts/setup.sh finds it), and unpack the plugin.
fetch_plugin() {
  local mirror uri keyring apt deb tmp
  local -a opts
  # shellcheck source=setup.sh disable=SC1091  # sourcing it runs nothing, only defines
  . "$REPO/scripts/setup.sh"
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { msg "no Debian entry found in the apt configuration"; return 1; }
  uri=${mirror%%$'\t'*}
  keyring=${mirror#*$'\t'}
  [ -n "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  apt="$DIR/apt"
  rm -rf "$apt"
  mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
  : >"$apt/sources.list"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
    "$uri" "$SUITE" "$keyring" >"$apt/sources.list.d/compose.sources"
  opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/sources.list.d"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
        -o "Dir::State::status=/dev/null" -o "Acquire::Languages=none")
  # As root, apt downloads as the _apt user, which cannot write into .state/.
  [ "$(id -u)" -ne 0 ] || opts+=(-o "APT::Sandbox::User=root")
  msg "fetching Debian's docker-compose package ($SUITE) into $DIR …"
  apt-get "${opts[@]}" update >"$DIR/apt.log" 2>&1 </dev/null || return 1
  (cd "$apt/deb" && apt-get "${opts[@]}" download docker-compose >>"$DIR/apt.log" 2>&1 </dev/null) \
    || return 1
  deb=$(find "$apt/deb" -name 'docker-compose_*.deb' | awk 'NR == 1')
  [ -n "$deb" ] || return 1
  tmp="$DIR/unpack"
  rm -rf "$tmp"
  dpkg-deb -x "$deb" "$tmp" || return 1
  [ -x "$tmp/usr/libexec/docker/cli-plugins/docker-compose" ] || return 1
  mkdir -p "$(dirname "$PLUGIN")"
  mv -f "$tmp/usr/libexec/docker/cli-plugins/docker-compose" "$PLUGIN.new"
  mv -f "$PLUGIN.new" "$PLUGIN"
  rm -rf "$tmp" "$apt"
}

# Prints the command (one word per line) that runs a Compose v2 client, if one can be had.
v2_client() {
  if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    printf '%s\n' docker compose
    return 0
  fi
  [ "${FLOWBILL_COMPOSE_V1:-0}" = 1 ] && return 1
  if ! "$PLUGIN" version >/dev/null 2>&1; then
    mkdir -p "$DIR"
    (
      # One fetch at a time (make targets may run together).
      flock -w 600 9 || exit 1
      # Its stdout would join the client's command line: everything it says goes to stderr.
      "$PLUGIN" version >/dev/null 2>&1 || fetch_plugin >&2
    ) 9>"$DIR/fetch.lock" || { msg "Debian's Compose v2 package could not be had; see $DIR/apt.log"; return 1; }
  fi
  if command -v docker >/dev/null; then
    # The docker CLI finds plugins under $DOCKER_CONFIG/cli-plugins.
    printf '%s\n' env "DOCKER_CONFIG=$DIR/docker-config" docker compose
  else
    printf '%s\n' "$PLUGIN"
  fi
}

v1_client() {
  if ! command -v docker-compose >/dev/null; then
    msg "installing Debian's docker-compose …"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null </dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      docker-compose >/dev/null </dev/null
  fi
  printf '%s\n' docker-compose
}

FILE=$(realpath "${1:-$REPO/docker-compose.yml}")
cd "$REPO"
mapfile -t client < <(v2_client || v1_client)
[ ${#client[@]} -gt 0 ] || { msg "no Compose client could be installed"; exit 1; }
msg "$("${client[@]}" version 2>/dev/null | head -n 1)"
env FLOWBILL_DB_PASSWORD=check FLOWBILL_MQTT_PASSWORD=check FLOWBILL_CARRIER_CALLBACK_SECRET=check \
    FLOWBILL_MQTT_CONTROL_PASSWORD=check \
    FLOWBILL_PAYMENT_CALLBACK_SECRET=check FLOWBILL_FULFILMENT_CALLBACK_SECRET=check \
    FLOWBILL_IDENTITY_CALLBACK_SECRET=check FLOWBILL_INVOICING_CALLBACK_SECRET=check \
    FLOWBILL_IOT_ID_HASH_KEY=check \
    FLOWBILL_GRAFANA_ADMIN_PASSWORD=check FLOWBILL_GRAFANA_DB_PASSWORD=check \
    FLOWBILL_API_DB_PASSWORD=check FLOWBILL_INGEST_DB_PASSWORD=check \
    FLOWBILL_BILLING_DB_PASSWORD=check FLOWBILL_WEBHOOKS_DB_PASSWORD=check \
  "${client[@]}" --project-directory "$REPO" -f "$FILE" config -q
msg "${FILE#"$REPO"/} is valid"
