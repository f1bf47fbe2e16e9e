#!/usr/bin/env bash
# Builds the dashboard (frontend/, Leptos CSR) into dist/, which the server serves at /.
#
# rustup cannot download the wasm32 target on these machines, so this follows the offline
# route of ../shared/TOOLCHAIN.md: Debian's Rust (rustc-web, with its std sources) builds std
# for wasm32 itself (build-std), rust-lld links, and wasm-bindgen-cli (the version in
# Cargo.lock) and Trunk come from crates.io. Whatever is already installed is kept, so a second
# run only rebuilds the app. The native server build never needs any of this.
set -euo pipefail
cd "$(dirname "$0")/.."

TRUNK_VERSION=0.21.14            # 0.22 needs rustc >= 1.96.1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
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

# 2. wasm-bindgen-cli at exactly the version in Cargo.lock, and Trunk.
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
if [[ $(trunk --version 2>/dev/null) != "trunk $TRUNK_VERSION" ]]; then
    step "cargo install trunk $TRUNK_VERSION"
    cargo install trunk --version "$TRUNK_VERSION" --locked
fi

# 3. Build: Debian's toolchain, std built for wasm32, size-optimised release, its own target
# directory so the native builds' artefacts are left alone.
export RUSTUP_TOOLCHAIN=debian-web RUSTC_BOOTSTRAP=1 CARGO_UNSTABLE_BUILD_STD=std,panic_abort
export CARGO_TARGET_DIR=target/wasm
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort
export CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
step "cargo fetch (wasm32 and std's own dependencies)"
cargo fetch --target wasm32-unknown-unknown >/dev/null
step "trunk build --release"
TRUNK_SKIP_VERSION_CHECK=true trunk build --release --offline
wasm=$(ls dist/*.wasm)
step "built $wasm: $(stat -c %s "$wasm") bytes, $(gzip -9c "$wasm" | wc -c) gzipped"
