#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the end-to-end suite on SQLite, then the end-to-end
# suite again on PostgreSQL (PG_TEST_URL, default postgres://postgres@127.0.0.1:5432/test; each
# test creates and drops its own database). A PostgreSQL that cannot be reached fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
# curl, jq, shellcheck, chromium, chromedriver (apt, when missing).
./scripts/install-test-tools.sh
# The committed dashboard (frontend/dist, embedded in the binary) must be built from these
# sources; the worker, skill and browser tests run the `agora` binary itself.
./scripts/dashboard-sources.sh --check
cargo build -p agora-cli --bin agora
echo "== unit and end-to-end tests, SQLite store"
cargo test --workspace "$@"
echo "== end-to-end tests, PostgreSQL store"
TEST_BACKEND=postgres cargo test -p agora-tests "$@"
