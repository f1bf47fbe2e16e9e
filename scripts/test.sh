#!/usr/bin/env bash
# Runs the whole test suite: domain unit tests, server unit tests and the end-to-end tests
# that start the real server on random ports.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace "$@"
