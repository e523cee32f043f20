#!/usr/bin/env bash
# `make audit`: cargo-deny's advisory, licence, duplicate-version and source checks of
# Cargo.lock and fuzz/Cargo.lock (deny.toml says what is allowed and why each exception stands).
#
# The RustSec advisory database is cloned into .local/advisory-dbs on first use and updated on
# each run. Without access to GitHub, give a local clone of rustsec/advisory-db:
#   make audit ADVISORY_DB=/path/to/advisory-db
# It is copied into place and the check runs offline against it.
set -euo pipefail
cd "$(dirname "$0")/.."
DENY=.venv/bin/cargo-deny
# cargo-deny keeps the default database in a directory named after its URL's hash.
DB=.local/advisory-dbs/advisory-db-3157b0e258782691
args=()
if [ -n "${ADVISORY_DB:-}" ]; then
  rm -rf "$DB"
  mkdir -p "$(dirname "$DB")"
  git clone --quiet "$ADVISORY_DB" "$DB"
  args+=(--offline)
fi
echo "advisory database: $(git -C "$DB" log -1 --format='%h of %cs' 2>/dev/null || echo 'fetched now')"
echo "== the workspace (Cargo.lock)"
"$DENY" "${args[@]}" check --hide-inclusion-graph
# The fuzz crate has its own lock (nightly only, never deployed); its advisories and licences
# are checked too. Offline from here on: the database was fetched above.
echo "== the fuzz crate (fuzz/Cargo.lock)"
"$DENY" --offline --manifest-path fuzz/Cargo.toml --config deny.toml check --hide-inclusion-graph
