#!/usr/bin/env bash
# Sets up everything Flowbill needs on Debian 12, idempotently:
#   1. Debian packages (PostgreSQL 15 and its server headers, Mosquitto, a C toolchain, cmake,
#      wrk for the benchmark),
#      installed only when missing (`apt-get update` only then too);
#   2. TimescaleDB, which Debian 12 lacks: built from Debian's own source package of the next
#      release (its Apache-licensed part) and installed into PostgreSQL 15, only when missing;
#   3. the virtualenv .venv with `pip install -e '.[dev]'`, again when pyproject.toml changed;
#   4. the driver page's chart library (Chart.js, pinned), fetched once with `npm pack` from the
#      npm registry this machine is configured for into the ignored api/static/vendor/; the
#      browser tests use Debian's chromium and chromium-driver (step 1).
# Runs as root (as CI does) or as a user with sudo. A second run takes well under a second.
# Everything it builds stays in the ignored .state/ folder; the system's apt sources are never
# changed. FLOWBILL_REBUILD_TIMESCALEDB=1 rebuilds and reinstalls the extension anyway.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$REPO/.state"
BUILD="$STATE/build"
APT_DIR="$STATE/apt"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
# The Debian release whose source package of TimescaleDB we build (Debian 13 has 2.19).
TIMESCALEDB_SUITE=${FLOWBILL_TIMESCALEDB_SUITE:-trixie}
PYTHON=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(postgresql-15 postgresql-client-15 postgresql-server-dev-15 postgresql-contrib
          mosquitto mosquitto-clients
          build-essential cmake dpkg-dev xz-utils libssl-dev libkrb5-dev
          python3-venv python3-dev docker-compose
          wrk  # wrk: the HTTP load generator of `make bench`
          chromium chromium-driver)  # the browser tests of the driver page (tests/web)
# The chart library the driver page serves (api/static/vendor/); bump both together.
CHART_PACKAGE=chart.js
CHART_VERSION=4.4.8
VENDOR="$REPO/api/static/vendor"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

# Privileged steps: directly as root, else through sudo (non-interactive without a terminal).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif ! command -v sudo >/dev/null; then
    die "this step needs root: run as root, or install sudo"
  elif [ -t 0 ]; then
    sudo "$@"
  else
    sudo -n "$@"
  fi
}

install_packages() {
  local installed p
  local -a missing=()
  installed=" $({ dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null \
                 || true; } | awk '$1 == "ii" {printf "%s ", $2}')"
  for p in "${PACKAGES[@]}"; do
    [[ $installed == *" $p "* ]] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]} …"
  # 9>&-: services the packages start must not inherit (and keep) our lock.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null 9>&-
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null 9>&-
}

# npm comes with Node.js; only without any npm do we install Debian's (which conflicts with
# other Node.js builds a machine may carry).
install_npm() {
  command -v npm >/dev/null && return 0
  say "installing Debian's npm …"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    npm </dev/null 9>&- || die "could not install npm"
}

# Fetches the pinned chart library with `npm pack` (the tarball only: no install scripts run)
# and keeps its one UMD file; a stamp names the version, so a second run does nothing.
vendor_chart() {
  local stamp="$VENDOR/.$CHART_PACKAGE-$CHART_VERSION" work tarball
  [ -f "$stamp" ] && [ -f "$VENDOR/chart.umd.js" ] && return 0
  install_npm
  say "fetching $CHART_PACKAGE $CHART_VERSION for the driver page …"
  work=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: work is local
  trap "rm -rf '$work'" RETURN
  (cd "$work" && npm pack --silent "$CHART_PACKAGE@$CHART_VERSION" >pack.log 2>&1 </dev/null) \
    || die "npm pack $CHART_PACKAGE@$CHART_VERSION failed: $(tail -n 5 "$work/pack.log")"
  tarball=$(find "$work" -maxdepth 1 -name '*.tgz' | awk 'NR == 1')
  [ -n "$tarball" ] || die "npm pack produced no tarball"
  tar -xzf "$tarball" -C "$work" package/dist/chart.umd.js package/LICENSE.md \
    || die "the $CHART_PACKAGE tarball has no dist/chart.umd.js"
  mkdir -p "$VENDOR"
  rm -f "$VENDOR"/.$CHART_PACKAGE-*
  install -m 0644 "$work/package/dist/chart.umd.js" "$VENDOR/chart.umd.js.new"
  install -m 0644 "$work/package/LICENSE.md" "$VENDOR/chart.js.LICENSE.md"
  mv -f "$VENDOR/chart.umd.js.new" "$VENDOR/chart.umd.js"
  touch "$stamp"
}

timescaledb_installed() {
  [ -f "$("$PG_CONFIG" --sharedir)/extension/timescaledb.control" ] \
    && [ -f "$("$PG_CONFIG" --pkglibdir)/timescaledb.so" ]
}

# Prints "URI<TAB>keyring" of the first entry of this machine's apt configuration that serves
# the release it runs (e.g. bookworm) with component main: that mirror also serves the newer
# release's sources. The keyring is empty when the entry names none (or has an inline key).
debian_mirror() {
  local codename f
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  {
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      awk -v suite="$codename" '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") \
              && (" " comps " ") ~ / main / && uris != "" && tolower(enabled) != "no") {
            split(uris, u, " ")
            if (signed ~ /BEGIN/) signed = ""
            print u[1] "\t" signed
          }
          types = suites = comps = uris = signed = enabled = ""
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { next }
        {
          key = tolower($0); sub(/:.*/, "", key)
          val = $0; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
          if (key == "types") types = val
          else if (key == "uris") uris = val
          else if (key == "suites") suites = val
          else if (key == "components") comps = val
          else if (key == "signed-by") signed = val
          else if (key == "enabled") enabled = val
        }
        END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      awk -v suite="$codename" '
        $1 == "deb" {
          i = 2; signed = ""
          if ($2 ~ /^\[/) {
            for (; i <= NF; i++) {
              if ($i ~ /signed-by=/) { signed = $i; sub(/.*signed-by=/, "", signed); sub(/\]$/, "", signed) }
              if ($i ~ /\]$/) { i++; break }
            }
          }
          if ($(i + 1) != suite) next
          for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i "\t" signed; next }
        }' "$f"
    done
  } | awk 'NR == 1'
}

build_timescaledb() {
  local mirror uri keyring src srcdir stage version
  local -a apt_opts
  say "building TimescaleDB from Debian's source package ($TIMESCALEDB_SUITE) …"
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || die "no Debian entry with component main found in the apt configuration"
  uri=${mirror%%$'\t'*}
  keyring=${mirror#*$'\t'}
  [ -n "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg

  # A private apt configuration (sources, lists, caches under .state/apt) that adds only the
  # newer release's *sources*, from the mirror this machine already uses. Nothing is installed
  # from it: the build dependencies are this release's packages above.
  rm -rf "$APT_DIR"
  mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
  : >"$APT_DIR/sources.list"
  printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
    "$uri" "$TIMESCALEDB_SUITE" "$keyring" >"$APT_DIR/sources.list.d/timescaledb-src.sources"
  apt_opts=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list"
            -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
            -o "Dir::State::Lists=$APT_DIR/lists"
            -o "Dir::Cache=$APT_DIR/cache"
            -o "Acquire::Languages=none")
  # As root, apt downloads as the _apt user, which cannot write into .state/.
  [ "$(id -u)" -ne 0 ] || apt_opts+=(-o "APT::Sandbox::User=root")

  mkdir -p "$BUILD"
  apt-get "${apt_opts[@]}" update >"$BUILD/apt-update.log" 2>&1 </dev/null \
    || die "apt-get update for the $TIMESCALEDB_SUITE sources failed; see $BUILD/apt-update.log"
  src="$BUILD/src"
  rm -rf "$src" && mkdir -p "$src"
  # Downloads the .dsc and tarballs and unpacks them with Debian's patches (dpkg-source).
  (cd "$src" && apt-get "${apt_opts[@]}" source timescaledb >"$BUILD/apt-source.log" 2>&1 </dev/null) \
    || die "apt-get source timescaledb failed; see $BUILD/apt-source.log"
  srcdir=$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'timescaledb-*' | awk 'NR == 1')
  [ -n "$srcdir" ] || die "no unpacked timescaledb source in $src; see $BUILD/apt-source.log"

  # The options Debian's own package uses (no telemetry), without the tests' dependencies.
  cmake -S "$srcdir" -B "$srcdir/build" -DPG_CONFIG="$PG_CONFIG" -DCMAKE_BUILD_TYPE=Release \
        -DAPACHE_ONLY=1 -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF \
        -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
        >"$BUILD/cmake.log" 2>&1 || die "cmake failed; see $BUILD/cmake.log"
  make -C "$srcdir/build" -j"$(nproc)" >"$BUILD/make.log" 2>&1 \
    || die "the TimescaleDB build failed; see $BUILD/make.log"
  stage="$BUILD/stage"
  rm -rf "$stage"
  make -C "$srcdir/build" install DESTDIR="$stage" >"$BUILD/install.log" 2>&1 \
    || die "staging the TimescaleDB install failed; see $BUILD/install.log"
  # Into place file by file, each through a rename, never rewriting a file in place: a running
  # cluster has the old library mapped, and overwriting it would crash that cluster.
  # shellcheck disable=SC2016  # expanded by that inner shell
  as_root sh -c '
    cd "$1" && find . -type f | while IFS= read -r f; do
      dest="/${f#./}"
      install -D -m "$(stat -c %a "$f")" "$f" "$dest.flowbill-new" && mv -f "$dest.flowbill-new" "$dest" \
        || exit 1
    done' sh "$stage" || die "installing TimescaleDB into PostgreSQL 15 failed"
  timescaledb_installed || die "TimescaleDB was built but its control file is not in place"
  version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" \
            "$("$PG_CONFIG" --sharedir)/extension/timescaledb.control")
  say "TimescaleDB $version installed (Apache-licensed edition)"
}

python_env() {
  command -v "$PYTHON" >/dev/null || die "no $PYTHON found; Python 3.11 or newer is needed"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); Python 3.11 or newer is needed"
  local stamp=.venv/.flowbill-installed
  local venv_ok=1
  .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || venv_ok=0
  if [ "$venv_ok" -eq 1 ] && [ "$stamp" -nt pyproject.toml ]; then
    return 0
  fi
  say "preparing the Python environment in .venv …"
  if [ "$venv_ok" -eq 0 ]; then
    "$PYTHON" -m venv --clear .venv || die "could not create .venv (python3-venv missing?)"
  fi
  export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
  local log="$STATE/pip.log"
  if ! { .venv/bin/python -m pip install --upgrade pip \
         && .venv/bin/python -m pip install -e '.[dev]'; } >"$log" 2>&1 </dev/null; then
    tail -n 25 "$log" >&2
    die "pip install -e '.[dev]' failed; see $log"
  fi
  touch "$stamp"
}

main() {
  cd "$REPO"
  mkdir -p "$STATE"
  # One setup at a time (make demo and make test may start together).
  exec 9>"$STATE/setup.lock"
  flock -w 1800 9 || die "another setup has held $STATE/setup.lock for 30 minutes"
  install_packages
  if [ "${FLOWBILL_REBUILD_TIMESCALEDB:-0}" = 1 ] || ! timescaledb_installed; then
    build_timescaledb
  fi
  python_env
  vendor_chart
  say "ready"
}

# Sourcing the file (for its functions) runs nothing.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
