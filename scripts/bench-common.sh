# Sourced by the bench scripts: the services started and their URLs in the
# environment (PG: the PostgreSQL URL for psql), /usr/bin/time and pymongo
# installed, and `reference_table NAME ROWS` seeding the reference table
# NAME with ROWS rows (unless it already holds them). From the project root.
scripts/services.sh start
# shellcheck disable=SC1091
. "${SHIFTLOAD_SERVICES_DIR:-${TMPDIR:-/tmp}/shiftload-services}/env"
PG=${SHIFTLOAD_PG_URL%%\?*}
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
python3 -m pip install -q pymongo >/dev/null 2>&1 || true

reference_table() {
  if [ "$(psql "$PG" -qAtc "SELECT count(*) FROM $1" 2>/dev/null || echo 0)" != "$2" ]; then
    sed "s/demo_orders/$1/g" scripts/seed-demo.sql | psql "$PG" -q -v ON_ERROR_STOP=1 -v rows="$2" 2>&1 | grep -v NOTICE >&2 || true
  fi
}

# The peers in their own virtualenv (PEERS_PY: its python), so that their
# pinned versions leave the system's Python alone.
peers_env() {
  local venv=${XDG_CACHE_HOME:-$HOME/.cache}/shiftload/peers-venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q -r scripts/bench-requirements.txt >/dev/null 2>&1 \
    || { echo "bench: pip install -r scripts/bench-requirements.txt failed" >&2; exit 1; }
  PEERS_PY=$venv/bin/python
}

# The measuring instrument examples/ack_endpoint.rs on port $1, acknowledging
# writes to collection $2 and forwarding the rest to MONGODB_URI's server,
# paced at $3 documents per second when given; ACK_URI is its URI. Stopped by
# ack_stop (or when the script exits).
ack_start() {
  cargo build --release --quiet --example ack_endpoint
  local upstream
  upstream=$(python3 -c "import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(f'{p.hostname}:{p.port or 27017}')" "$MONGODB_URI")
  ./target/release/examples/ack_endpoint "127.0.0.1:$1" "$upstream" "$2" ${3:+"$3"} 2>>"${ACK_LOG:-/dev/null}" &
  ACK_PID=$!
  ACK_URI="mongodb://127.0.0.1:$1/"
  local i
  for ((i = 0; i < 50; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "bench: the ack endpoint did not start" >&2; exit 1
}
ack_stop() { if [ -n "${ACK_PID:-}" ]; then kill "$ACK_PID" 2>/dev/null; wait "$ACK_PID" 2>/dev/null || true; ACK_PID=; fi; }

# "rows/s wall cpu rss_mib" of a /usr/bin/time -v report ($1) for $2 rows.
time_figures() {
  awk -v rows="$2" '
    /Elapsed \(wall/ {n=split($NF, t, ":"); wall = (n == 3) ? t[1]*3600+t[2]*60+t[3] : t[1]*60+t[2]}
    /User time/ {user=$NF} /System time/ {sys=$NF}
    /Maximum resident/ {rss=$NF/1024}
    END {printf "%.0f %.2f %.2f %.0f\n", rows / wall, wall, user + sys, rss}' "$1"
}
