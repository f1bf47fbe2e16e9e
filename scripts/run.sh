#!/usr/bin/env bash
# Builds the server (release) and starts Agora on the embedded SQLite default (data under
# ./data) with the dashboard at http://localhost:3000/. The dashboard is built into the binary
# (frontend/dist, committed), so nothing but cargo is needed. Extra arguments go to
# `agora serve`, e.g. `scripts/run.sh --port 8080`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --locked -p agora-cli --bin agora -- serve "$@"
