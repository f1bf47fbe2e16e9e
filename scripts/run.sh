#!/usr/bin/env bash
# Builds and starts Agora on the embedded SQLite default (data under ./data).
# Extra arguments go to `agora serve`, e.g. `scripts/run.sh --port 8080`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -p agora-server --bin agora -- serve "$@"
