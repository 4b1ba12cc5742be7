#!/usr/bin/env bash
# The whole test suite: starts the real servers (installing what is missing),
# checks formatting and lints, then runs every test against those servers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh start
# shellcheck disable=SC1091
. "${SHIFTLOAD_SERVICES_DIR:-${TMPDIR:-/tmp}/shiftload-services}/env"

# pyarrow: the independent Parquet reader of tests/export.rs.
python3 -c 'import pyarrow' 2>/dev/null || python3 -m pip install -q 'pyarrow>=15'

cargo fmt --all -- --check
cargo clippy --release --all-targets --quiet -- -D warnings
cargo test --release "$@"
