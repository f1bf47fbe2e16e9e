#!/usr/bin/env bash
# Builds the dashboard (scripts/build-dashboard.sh; skipped with SKIP_DASHBOARD=1) and the server
# (release), then starts Agora on the embedded SQLite default (data under ./data) with the
# dashboard at http://localhost:3000/. Extra arguments go to `agora serve`, e.g.
# `scripts/run.sh --port 8080`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${SKIP_DASHBOARD:-0} != 1 ]]; then
    ./scripts/build-dashboard.sh
fi
exec cargo run --release -p agora-cli --bin agora -- serve "$@"
