#!/usr/bin/env bash
# Install (when missing) and start, or stop, the servers shiftload's tests and
# demo run against, all on loopback with their own data directories:
#   PostgreSQL (Debian package)  stand-in for Redshift      port $SHIFTLOAD_PG_PORT (55432)
#   FerretDB v1 (SQLite backend) stand-in for MongoDB       port $SHIFTLOAD_MONGO_PORT (27018)
#   moto_server (PyPI)           S3 endpoint                port $SHIFTLOAD_S3_PORT (55000)
# PostgreSQL listens on 127.0.0.1 and ::1 with TLS on, its certificate from
# a test CA made here ($SHIFTLOAD_SERVICES_DIR/tls, see tls_make).
#
# Usage: scripts/services.sh start|stop|status|env
# `start` is idempotent and writes $SHIFTLOAD_SERVICES_DIR/env, which
# exports the URLs for tests and the demo. A MONGODB_URI already set in the
# environment is kept: tests then run against that server instead.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${SHIFTLOAD_SERVICES_DIR:-${TMPDIR:-/tmp}/shiftload-services}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/shiftload
PG_PORT=${SHIFTLOAD_PG_PORT:-55432}
MONGO_PORT=${SHIFTLOAD_MONGO_PORT:-27018}
S3_PORT=${SHIFTLOAD_S3_PORT:-55000}
PG_USER=shiftload
PG_PASSWORD=shiftload-local-pw
PG_DB=shiftload

say() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (install it yourself, or run as root)"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  return 1
}

# ------------------------------------------------------------------------ TLS
# A test CA made on this machine at first start (and again when missing or
# older than a day): server certificates for "localhost" only (so that
# connecting by IP address proves host-name checking), a client
# certificate for the PostgreSQL role shiftload_cert, and a second,
# unrelated CA for the wrong-CA tests.
tls_make() {
  local d=$STATE/tls
  if [ -f "$d/ok" ] && [ -z "$(find "$d/ok" -mmin +1440 2>/dev/null)" ]; then return 0; fi
  if ! command -v openssl >/dev/null; then
    say "installing openssl from Debian packages"
    as_root apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openssl >/dev/null \
      || die "apt-get install openssl failed"
  fi
  rm -rf "$d"; mkdir -p "$d"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  for ca in ca other-ca; do
    openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=shiftload test $ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$d/$ca.key" -out "$d/$ca.crt" 2>/dev/null
  done
  leaf() { # name subject extensions
    openssl req "${ec[@]}" -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "$3" >"$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 30 -extfile "$d/$1.ext" -out "$d/$1.crt" 2>/dev/null
  }
  leaf server "/CN=localhost" $'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth'
  leaf client "/CN=shiftload_cert" "extendedKeyUsage=clientAuth"
  cat "$d/client.crt" "$d/client.key" >"$d/client.pem"
  chmod 600 "$d"/*.key "$d/client.pem"
  touch "$d/ok"
}

# ---------------------------------------------------------------- PostgreSQL
pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

pg_install() {
  pg_bindir >/dev/null && return 0
  say "installing PostgreSQL from Debian packages"
  as_root apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null \
    || die "apt-get install postgresql failed"
  pg_bindir >/dev/null || die "PostgreSQL installed but no initdb under /usr/lib/postgresql/*/bin"
}

# PostgreSQL refuses to run as root: run it as the `postgres` user then.
pg_run() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Client authentication: SCRAM over TCP (IPv4 and IPv6), a client
# certificate for shiftload_cert over TLS, trust on the Unix socket.
pg_hba() {
  cat <<HBA
local   all all                          trust
hostssl all shiftload_cert 127.0.0.1/32  cert
hostssl all shiftload_cert ::1/128       cert
host    all all            127.0.0.1/32  scram-sha-256
host    all all            ::1/128       scram-sha-256
HBA
}

pg_start() {
  pg_install
  local bin dir
  bin=$(pg_bindir)
  dir=$STATE/pg
  if [ -f "$dir/data/postmaster.pid" ] && pg_run "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    if [ "$(pg_run "$bin/psql" -h "$dir" -p "$PG_PORT" -U postgres -d postgres -qAtc 'SHOW ssl' 2>/dev/null)" = on ] \
      && cmp -s "$STATE/tls/server.crt" "$dir/server.crt"; then
      say "PostgreSQL already running on $PG_PORT"
      return 0
    fi
    say "restarting PostgreSQL with TLS on"
    pg_run "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  fi
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir" && chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    say "initialising PostgreSQL in $dir/data"
    printf '%s\n' "$PG_PASSWORD" > "$dir/pw"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/pw"
    pg_run "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --pwfile="$dir/pw" -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || die "initdb failed, see $dir/initdb.log"
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_connections = 200
timezone = 'UTC'
CONF
  fi
  # TLS, IPv6 and the hba file are given at each start, so a data
  # directory made by an older script gets them too.
  install -m 600 "$STATE/tls/server.key" "$dir/server.key"
  install -m 644 "$STATE/tls/server.crt" "$dir/server.crt"
  install -m 644 "$STATE/tls/ca.crt" "$dir/ca.crt"
  pg_hba >"$dir/hba.conf"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/server.key" "$dir/server.crt" "$dir/ca.crt" "$dir/hba.conf"
  local listen=127.0.0.1
  # IPv6 loopback when the kernel has it (no dependency on iproute2).
  grep -qs ' lo$' /proc/net/if_inet6 && listen=127.0.0.1,::1
  pg_run "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=$listen -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key -c ssl_ca_file=$dir/ca.crt -c hba_file=$dir/hba.conf" \
    start >/dev/null \
    || die "PostgreSQL did not start, see $dir/server.log"
  pg_run "$bin/psql" -h "$dir" -p "$PG_PORT" -U postgres -d postgres -qAtc \
    "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'" | grep -q 1 \
    || pg_run "$bin/psql" -h "$dir" -p "$PG_PORT" -U postgres -d postgres -qc \
      "CREATE ROLE $PG_USER LOGIN SUPERUSER PASSWORD '$PG_PASSWORD'" >/dev/null
  pg_run "$bin/psql" -h "$dir" -p "$PG_PORT" -U postgres -d postgres -qAtc \
    "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1 \
    || pg_run "$bin/psql" -h "$dir" -p "$PG_PORT" -U postgres -d postgres -qc \
      "CREATE DATABASE $PG_DB OWNER $PG_USER" >/dev/null
  pg_run "$bin/psql" -h "$dir" -p "$PG_PORT" -U postgres -d postgres -qAtc \
    "SELECT 1 FROM pg_roles WHERE rolname = 'shiftload_cert'" | grep -q 1 \
    || pg_run "$bin/psql" -h "$dir" -p "$PG_PORT" -U postgres -d postgres -qc \
      "CREATE ROLE shiftload_cert LOGIN SUPERUSER" >/dev/null
  say "PostgreSQL ready on 127.0.0.1:$PG_PORT"
}

pg_stop() {
  local bin
  bin=$(pg_bindir) || return 0
  [ -f "$STATE/pg/data/postmaster.pid" ] || return 0
  pg_run "$bin/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  say "PostgreSQL stopped"
}

# ------------------------------------------------------------------- FerretDB
ferretdb_bin() { echo "$CACHE/bin/ferretdb-launcher"; }

ferretdb_build() {
  local src=$ROOT/scripts/ferretdb bin stamp want
  bin=$(ferretdb_bin)
  want=$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-16)
  stamp="$bin.$want"
  [ -x "$bin" ] && [ -f "$stamp" ] && return 0
  command -v go >/dev/null || die "Go is needed to build FerretDB (scripts/ferretdb); install Go first"
  say "building FerretDB v1.24.2 (Go module proxy) into $bin"
  mkdir -p "$(dirname "$bin")"
  (cd "$src" && go build -o "$bin" .) >"$CACHE/ferretdb-build.log" 2>&1 \
    || die "building FerretDB failed, see $CACHE/ferretdb-build.log"
  rm -f "$bin".*; touch "$stamp"
}

ferretdb_start() {
  if port_open "$MONGO_PORT"; then say "FerretDB already listening on $MONGO_PORT"; return 0; fi
  ferretdb_build
  mkdir -p "$STATE/ferretdb/data"
  nohup "$(ferretdb_bin)" -listen-addr "127.0.0.1:$MONGO_PORT" -handler sqlite \
    -sqlite-url "file:$STATE/ferretdb/data/" -log-level warn \
    >"$STATE/ferretdb/server.log" 2>&1 &
  echo $! >"$STATE/ferretdb/pid"
  wait_port "$MONGO_PORT" ferretdb 30 || die "FerretDB did not start, see $STATE/ferretdb/server.log"
  say "FerretDB ready on 127.0.0.1:$MONGO_PORT"
}

stop_pidfile() { # file name
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    say "$2 stopped"
  fi
  rm -f "$1"
}

# ----------------------------------------------------------------------- moto
moto_start() {
  if port_open "$S3_PORT"; then say "moto already listening on $S3_PORT"; return 0; fi
  if ! command -v moto_server >/dev/null; then
    say "installing moto[server] from PyPI"
    python3 -m pip install -q 'moto[server]>=5' >"$STATE/moto-install.log" 2>&1 \
      || die "pip install moto[server] failed, see $STATE/moto-install.log"
  fi
  mkdir -p "$STATE/moto"
  nohup moto_server -H 127.0.0.1 -p "$S3_PORT" >"$STATE/moto/server.log" 2>&1 &
  echo $! >"$STATE/moto/pid"
  wait_port "$S3_PORT" moto 30 || die "moto did not start, see $STATE/moto/server.log"
  say "moto (S3) ready on 127.0.0.1:$S3_PORT"
}

write_env() {
  cat >"$STATE/env" <<ENV
export SHIFTLOAD_PG_URL='postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB?sslmode=disable'
export MONGODB_URI='${MONGODB_URI:-mongodb://127.0.0.1:$MONGO_PORT/}'
export SHIFTLOAD_S3_ENDPOINT='http://127.0.0.1:$S3_PORT'
export SHIFTLOAD_FERRETDB_BIN='$(ferretdb_bin)'
export SHIFTLOAD_TLS_DIR='$STATE/tls'
export SHIFTLOAD_PG_SOCKET_DIR='$STATE/pg'
export AWS_ACCESS_KEY_ID='${AWS_ACCESS_KEY_ID:-testing}'
export AWS_SECRET_ACCESS_KEY='${AWS_SECRET_ACCESS_KEY:-testing}'
export AWS_REGION='${AWS_REGION:-us-east-1}'
ENV
}

case "${1:-}" in
  start)
    mkdir -p "$STATE"
    [ "$(id -u)" = 0 ] && chmod 755 "$STATE"
    tls_make
    pg_start
    ferretdb_build  # tests also start short-lived instances of their own
    if [ -n "${MONGODB_URI:-}" ] && [ "$MONGODB_URI" != "mongodb://127.0.0.1:$MONGO_PORT/" ]; then
      say "MONGODB_URI is set: not starting FerretDB"
    else
      ferretdb_start
    fi
    moto_start
    write_env
    say "environment: source $STATE/env"
    ;;
  stop)
    stop_pidfile "$STATE/ferretdb/pid" FerretDB
    stop_pidfile "$STATE/moto/pid" moto
    pg_stop
    ;;
  status)
    for p in "$PG_PORT:PostgreSQL" "$MONGO_PORT:FerretDB" "$S3_PORT:moto"; do
      if port_open "${p%%:*}"; then echo "${p#*:} up on ${p%%:*}"; else echo "${p#*:} down"; fi
    done
    ;;
  env)
    [ -f "$STATE/env" ] || die "not started: run scripts/services.sh start"
    cat "$STATE/env"
    ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
