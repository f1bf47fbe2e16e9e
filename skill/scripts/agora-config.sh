#!/usr/bin/env bash
# agora-config.sh: where the Agora server is.
#
# The URL comes from, in order: $AGORA_URL, the "url" of $AGORA_CONFIG_DIR/config.json
# (default ~/.agora/config.json), then http://localhost:3000.
set -euo pipefail

PROG=agora-config
DEFAULT_URL=http://localhost:3000
CONFIG_DIR=${AGORA_CONFIG_DIR:-${HOME:?HOME is not set; set AGORA_CONFIG_DIR}/.agora}
CONFIG_FILE=$CONFIG_DIR/config.json
# Seconds allowed to reach the server's health endpoint.
HEALTH_TIMEOUT=${AGORA_HEALTH_TIMEOUT:-5}

usage() {
    cat <<EOF
Usage: agora-config.sh COMMAND

Commands:
  get-url        print the server URL: \$AGORA_URL, else the saved one, else $DEFAULT_URL
  set-url URL    check that URL/api/health answers, then save URL in $CONFIG_FILE
  status         print the URL in use and the server's health answer (exit 1 if unreachable)
  reset          forget the saved URL (removes $CONFIG_FILE)

Environment:
  AGORA_URL             overrides the saved URL
  AGORA_CONFIG_DIR      config directory (default ~/.agora)
  AGORA_HEALTH_TIMEOUT  seconds to wait for the health check (default 5)
EOF
}

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}

# The URL saved in config.json, or nothing.
saved_url() {
    [[ -f $CONFIG_FILE ]] || return 0
    sed -n 's/.*"url"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$CONFIG_FILE" | head -n 1
}

# URL without trailing slashes, and without a trailing /api (people paste either).
normalize() {
    local u=$1
    while [[ $u == */ ]]; do u=${u%/}; done
    u=${u%/api}
    printf '%s' "$u"
}

# Checks that the URL looks like an http(s) base URL that is safe to store in JSON.
check_syntax() {
    local u=$1
    [[ $u =~ ^https?://[^[:space:]\"\\]+$ ]] \
        || die "'$u' is not an http:// or https:// URL (example: http://localhost:3000)"
}

# Where the URL in use comes from.
url_source() {
    if [[ -n ${AGORA_URL:-} ]]; then
        echo "AGORA_URL"
    elif [[ -n $(saved_url) ]]; then
        echo "$CONFIG_FILE"
    else
        echo "default"
    fi
}

get_url() {
    local u
    if [[ -n ${AGORA_URL:-} ]]; then
        u=$AGORA_URL
    else
        u=$(saved_url)
        [[ -n $u ]] || u=$DEFAULT_URL
    fi
    normalize "$u"
}

# GET URL/api/health. On success prints the answer; on failure prints why to stderr and
# returns 1.
health() {
    local base=$1 out rc=0 body code
    out=$(curl -sS --connect-timeout "$HEALTH_TIMEOUT" --max-time "$HEALTH_TIMEOUT" \
        -w '\n%{http_code}' "$base/api/health" 2>&1) || rc=$?
    if ((rc != 0)); then
        # curl's own message, e.g. "curl: (7) Failed to connect to ... Connection refused".
        local why=${out##*curl: }
        why=${why%%$'\n'*}
        printf '%s: cannot reach %s (%s); is the server running?\n' "$PROG" "$base" "curl: $why" >&2
        return 1
    fi
    code=${out##*$'\n'}
    body=${out%$'\n'*}
    if [[ $body != *'"success":'* || $body != *'"backend":'* ]]; then
        printf '%s: %s answered HTTP %s to GET /api/health, but not as an Agora server; is this the right URL?\n' \
            "$PROG" "$base" "$code" >&2
        return 1
    fi
    if [[ $code != 200 ]]; then
        printf '%s: %s is an Agora server but it is not healthy (HTTP %s): %s\n' "$PROG" "$base" "$code" "$body" >&2
        return 1
    fi
    printf '%s\n' "$body"
}

set_url() {
    local u
    u=$(normalize "$1")
    check_syntax "$u"
    health "$u" >/dev/null || exit 1
    mkdir -p "$CONFIG_DIR"
    local tmp
    tmp=$(mktemp "$CONFIG_DIR/.config.json.XXXXXX")
    printf '{"url": "%s"}\n' "$u" >"$tmp"
    mv -f "$tmp" "$CONFIG_FILE"
    echo "$PROG: saved $u in $CONFIG_FILE"
    if [[ -n ${AGORA_URL:-} && $(normalize "$AGORA_URL") != "$u" ]]; then
        echo "$PROG: note: AGORA_URL=$AGORA_URL is set and takes precedence" >&2
    fi
}

status() {
    local u
    u=$(get_url)
    echo "url: $u (from $(url_source))"
    local h
    h=$(health "$u") || exit 1
    echo "health: $h"
}

reset() {
    if [[ -f $CONFIG_FILE ]]; then
        rm -f "$CONFIG_FILE"
        echo "$PROG: removed $CONFIG_FILE"
    else
        echo "$PROG: no saved URL ($CONFIG_FILE does not exist)"
    fi
}

main() {
    if (($# == 0)); then
        usage >&2
        exit 2
    fi
    case $1 in
        -h | --help | help)
            usage
            ;;
        get-url)
            (($# == 1)) || die "get-url takes no argument"
            get_url
            echo
            ;;
        set-url)
            (($# == 2)) || die "usage: agora-config.sh set-url URL"
            set_url "$2"
            ;;
        status)
            (($# == 1)) || die "status takes no argument"
            status
            ;;
        reset)
            (($# == 1)) || die "reset takes no argument"
            reset
            ;;
        *)
            printf '%s: unknown command %s\n\n' "$PROG" "$1" >&2
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
