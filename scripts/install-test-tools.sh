#!/usr/bin/env bash
# Installs the tools the test suite runs besides cargo (Debian packages): curl and jq for the
# skill's scripts, shellcheck for their lint, chromium and chromedriver for the dashboard's
# browser test, schemathesis (PyPI) for the fuzz test, the MCP Python SDK (PyPI) for the MCP
# tests and axe-core (npm) for the accessibility audit. Skips what is already there. (The
# dashboard's own toolchain is scripts/build-dashboard.sh's business.)
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in curl jq shellcheck chromium; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
command -v chromedriver >/dev/null || missing+=(chromium-driver)
sudo_cmd=()
[[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# schemathesis (PyPI) for the fuzz test, in a virtualenv of its own under target/.
SCHEMATHESIS_VERSION=4.32.5
venv=target/tools-venv
if [[ $("$venv/bin/schemathesis" --version 2>/dev/null) != "schemathesis, version $SCHEMATHESIS_VERSION" ]]; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv" 2>/dev/null || {
        "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

# The official MCP Python SDK (PyPI), the independent client of the MCP tests
# (tests/mcp/agora_mcp.py), in a virtualenv of its own: its dependencies are not schemathesis's.
MCP_VERSION=2.3.0
mcp_venv=target/mcp-venv
if [[ $("$mcp_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null) != "$MCP_VERSION" ]]; then
    echo "installing mcp $MCP_VERSION into $mcp_venv"
    python3 -m venv "$mcp_venv"
    "$mcp_venv/bin/pip" install -q "mcp==$MCP_VERSION"
fi

# axe-core (npm) for the browser test's accessibility audit, under target/ too.
AXE_VERSION=4.14.1
axe_dir=target/tools-node
if [[ $(node -p "require('./$axe_dir/node_modules/axe-core/package.json').version" 2>/dev/null) != "$AXE_VERSION" ]]; then
    echo "installing axe-core $AXE_VERSION into $axe_dir"
    mkdir -p "$axe_dir"
    npm install --silent --no-audit --no-fund --prefix "$axe_dir" "axe-core@$AXE_VERSION" >/dev/null
fi
