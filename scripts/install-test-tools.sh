#!/usr/bin/env bash
# Installs the tools the test suite runs besides cargo (Debian packages): curl and jq for the
# skill's scripts, shellcheck for their lint, chromium and chromedriver for the dashboard's
# browser test. Skips what is already there. (The dashboard's own toolchain is
# scripts/build-dashboard.sh's business.)
set -euo pipefail
missing=()
for tool in curl jq shellcheck chromium; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
