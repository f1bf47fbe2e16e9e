#!/usr/bin/env bash
# Peer benchmark: BullMQ (Redis) and graphile-worker (PostgreSQL) on this machine, for comparison
# with `agora-bench --only throughput`. Installs the pinned packages (package-lock.json) into
# bench/peers/node_modules, then runs both benchmarks with the same arguments, e.g.
#   bench/peers/run.sh --workers 1,16,64 --jobs 20000
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "run.sh: node and npm are needed" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error

node bullmq.mjs "$@"
node graphile.mjs "$@"
