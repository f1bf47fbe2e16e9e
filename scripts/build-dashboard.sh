#!/usr/bin/env bash
# Builds the dashboard (frontend/, Leptos CSR) into frontend/dist/, which is committed and
# embedded in the server binary: `agora serve` serves it at / with no build step of its own.
# Run this after changing frontend/ or shared/ (the dashboard is compiled from both), then commit
# frontend/dist/ with the change. frontend/dist/SOURCES records what it was built from, and the
# test suite fails when that record no longer matches the sources (scripts/dashboard-sources.sh).
#
# No Trunk: cargo builds the wasm and wasm-bindgen (the version in Cargo.lock) writes its JS
# glue, which is what Trunk runs underneath; compiling Trunk itself took 7 to 13 minutes here.
# Trunk.toml still works for those who have Trunk (`trunk build`, then FRONTEND_DIR=dist).
#
# rustup cannot download the wasm32 target on these machines, so this follows the offline
# route of ../shared/TOOLCHAIN.md: Debian's Rust (rustc-web, with its std sources) builds std
# for wasm32 itself (build-std), rust-lld links. Whatever is already installed is kept, so a
# second run only rebuilds the app.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
OUT=frontend/dist
T0=$SECONDS
step() { echo "== [$((SECONDS - T0)) s] $*"; }

as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

# 1. Debian's Rust for wasm32: compiler, std sources, and the linker rust-lld points at.
packages=(rustc-web cargo-web libstd-rust-web-dev rust-web-src rust-web-llvm lld-22)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
test -f /usr/lib/rustlib/src/rust/library/Cargo.lock || {
    echo "build-dashboard: std sources missing (rust-web-src)" >&2
    exit 1
}
rustup toolchain list | grep -q '^debian-web' || rustup toolchain link debian-web /usr

# 2. wasm-bindgen-cli at exactly the version in Cargo.lock (the JS glue must match the crate).
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[[ -n $WB_VERSION ]] || { echo "build-dashboard: no wasm-bindgen in Cargo.lock" >&2; exit 1; }
grep -q "wasm_bindgen = \"$WB_VERSION\"" Trunk.toml || {
    echo "build-dashboard: Trunk.toml must pin wasm_bindgen = \"$WB_VERSION\" (Cargo.lock)" >&2
    exit 1
}
if [[ $(wasm-bindgen --version 2>/dev/null) != "wasm-bindgen $WB_VERSION" ]]; then
    step "cargo install wasm-bindgen-cli $WB_VERSION"
    # Its own lockfile may want a crate the registry lacks: then resolve afresh.
    cargo install wasm-bindgen-cli --version "$WB_VERSION" --locked ||
        cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

# 3. Build: Debian's toolchain, std built for wasm32, size-optimised release, its own target
# directory so the native builds' artefacts are left alone.
export RUSTUP_TOOLCHAIN=debian-web RUSTC_BOOTSTRAP=1 CARGO_UNSTABLE_BUILD_STD=std,panic_abort
export CARGO_TARGET_DIR=target/wasm
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort
export CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
step "cargo build --release --target wasm32-unknown-unknown -p agora-dashboard"
cargo build --release --locked --target wasm32-unknown-unknown -p agora-dashboard
unset RUSTUP_TOOLCHAIN RUSTC_BOOTSTRAP CARGO_UNSTABLE_BUILD_STD

# 4. The JS glue, then the files under names that change with their content (so a browser
# may cache them for good), and index.html pointing at them.
step "wasm-bindgen --target web"
stage=$(mktemp -d target/dashboard-stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT
wasm-bindgen --target web --no-typescript --out-name agora --out-dir "$stage/bindgen" \
    target/wasm/wasm32-unknown-unknown/release/agora-dashboard.wasm
mkdir "$stage/dist"
hashed() { # file, name, extension: copies the file to dist as name-<hash>.extension
    local h
    h=$(sha256sum "$1" | cut -c1-16)
    cp "$1" "$stage/dist/$2-$h.$3"
    echo "$2-$h.$3"
}
wasm=$(hashed "$stage/bindgen/agora_bg.wasm" agora_bg wasm)
# The glue names its wasm only as a default; index.html passes the hashed name instead.
js=$(hashed "$stage/bindgen/agora.js" agora js)
css=$(hashed frontend/style.css style css)
head_links="<link rel=\"stylesheet\" href=\"/$css\" />\n"
head_links+="    <link rel=\"modulepreload\" href=\"/$js\" />\n"
head_links+="    <link rel=\"preload\" href=\"/$wasm\" as=\"fetch\" type=\"application/wasm\" crossorigin=\"\" />\n"
head_links+="    <script type=\"module\">import init from '/$js'; init({ module_or_path: '/$wasm' });</script>"
# frontend/index.html is Trunk's input: its two data-trunk links become the real ones.
grep -q 'data-trunk rel="css"' frontend/index.html && grep -q 'data-trunk rel="rust"' frontend/index.html || {
    echo "build-dashboard: frontend/index.html lost its data-trunk links" >&2
    exit 1
}
sed -e "s|<link data-trunk rel=\"css\"[^>]*>|$head_links|" \
    -e '/<link data-trunk rel="rust"[^>]*>/d' frontend/index.html >"$stage/dist/index.html"
# Gzipped twins, served to browsers that take gzip (-n: no name or time, so the same bytes
# give the same file).
for f in "$wasm" "$js" "$css"; do gzip -9 -n -k "$stage/dist/$f"; done
./scripts/dashboard-sources.sh >"$stage/dist/SOURCES"
{
    echo "# built by scripts/build-dashboard.sh on $(date -u +%Y-%m-%d) with:"
    echo "#   $(rustc +debian-web --version 2>/dev/null || echo rustc-web)"
    echo "#   $(wasm-bindgen --version)"
} >>"$stage/dist/SOURCES"
rm -rf "$OUT"
mv "$stage/dist" "$OUT"
step "built $OUT/$wasm: $(stat -c %s "$OUT/$wasm") bytes, $(gzip -9c "$OUT/$wasm" | wc -c) gzipped; $OUT/$js $(stat -c %s "$OUT/$js") bytes"
