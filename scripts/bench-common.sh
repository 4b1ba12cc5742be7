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
