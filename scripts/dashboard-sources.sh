#!/usr/bin/env bash
# Prints the digest of what the dashboard is built from: the files of frontend/ (but its dist/),
# shared/, the workspace manifest and the build script, and the dashboard's resolved dependencies
# (`cargo tree`, so a server-only change to Cargo.lock does not count). scripts/build-dashboard.sh
# writes it as the first line of frontend/dist/SOURCES.
#
# --check: fails, saying what to do, when frontend/dist/SOURCES records other sources than
# these: the committed dashboard would be stale. scripts/test.sh (and so CI) runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

digest() {
    {
        git ls-files --cached --others --exclude-standard -- \
            frontend shared Cargo.toml scripts/build-dashboard.sh ':!frontend/dist' |
            LC_ALL=C sort | while read -r f; do
            [[ -f $f ]] && sha256sum "$f"
        done
        cargo tree --locked --quiet -p agora-dashboard --target wasm32-unknown-unknown \
            -e normal,build --prefix none | sed -e 's/ ([^)]*)//g' | LC_ALL=C sort -u
    } | sha256sum | cut -d' ' -f1
}

now=$(digest)
if [[ ${1:-} != --check ]]; then
    echo "$now"
    exit 0
fi
recorded=$(head -n1 frontend/dist/SOURCES 2>/dev/null || echo "nothing (frontend/dist/SOURCES is missing)")
if [[ $recorded != "$now" ]]; then
    echo "dashboard-sources: frontend/dist was built from other sources than these" >&2
    echo "  recorded: $recorded" >&2
    echo "  now:      $now" >&2
    echo "frontend/ or shared/ changed since the dashboard was built: run" \
        "scripts/build-dashboard.sh and commit frontend/dist with the change." >&2
    exit 1
fi
echo "dashboard-sources: frontend/dist matches its sources ($now)"
