#!/usr/bin/env bash
# agora.sh: the Agora calls an agent makes, over curl.
#
# Prints the server's JSON answer ({"success":..., "data":...}) on stdout. On an error answer
# (success:false) it prints the answer on stdout too, "agora: CODE (HTTP n): message" on
# stderr, and exits 1. `claim` prints nothing when no task was pending (exit 0).
set -euo pipefail

PROG=agora
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG_DIR=${AGORA_CONFIG_DIR:-${HOME:?HOME is not set; set AGORA_CONFIG_DIR}/.agora}
AGENT_FILE=$CONFIG_DIR/agent.json
TIMEOUT=${AGORA_TIMEOUT:-30}

usage() {
    cat <<'EOF'
Usage: agora.sh COMMAND [ARGS...]

Agent (needs `register` first; credentials are kept in $AGORA_CONFIG_DIR/agent.json):
  register NAME [CAPABILITY...]        register and save agent_id + token (the token goes
                                       to the profile only, not to stdout)
  whoami                               print the saved agent id
  heartbeat                            tell the server this agent is alive
  claim [WAIT_SECS]                    take the next task, waiting up to WAIT_SECS (0-60,
                                       default 30); prints nothing and exits 4 if none was
                                       pending. Start it within data.task.lease_expires_at
                                       (CLAIM_LEASE_SECS) or it goes back to pending. Its
                                       lease_id is kept and sent with every report below
  start TASK_ID [HEARTBEAT_SECS]       claimed -> running; with HEARTBEAT_SECS the task is
                                       taken back if no progress or heartbeat comes within
                                       that many seconds (else it may run to its deadline).
                                       start and progress print the task's id, status,
                                       progress and lease times (AGORA_VERBOSE=1: all of it)
  progress TASK_ID PERCENT [MESSAGE] [EXTEND_SECS]
                                       report 0-100; EXTEND_SECS moves the deadline to
                                       now + EXTEND_SECS (at most the task's timeout_secs)
  complete TASK_ID RESULT_JSON         finish the task; RESULT_JSON may be - (stdin) or @FILE.
                                       A plan task needs {"task_specs": [...]}
  fail TASK_ID ERROR [true|false]      report a failed attempt; false = do not retry
  complete-next TASK_ID RESULT_JSON    complete, and claim the next task in the same call:
                                       prints {data: {task, next}}; next is the claim (its
                                       lease kept, as by claim) or null when none is pending
  approve JOB_ID [COMMENT]             approve a job (once per job, one per cooldown)
  reject JOB_ID REASON                 reject a job: it fails with your reason (a vote:
                                       same cooldown as an approval)
  plan-approve JOB_ID [COMMENT]        approve the plan of a job waiting for plan review
  plan-reject JOB_ID REASON            reject that plan: a new plan task gets your reason
  approvals JOB_ID                     every vote on the job and its plans, with reasons
  can-approve [AGENT_ID]               {can_approve, next_allowed_at}
  unregister                           leave: DELETE /api/agents/ID, forget the credentials

Anyone:
  submit TITLE SPEC_JSON [PRIORITY]    submit a job (SPEC_JSON may be - or @FILE); as the
                                       saved agent (submitted_by) when there is one
  job JOB_ID                           one job with its counters
  tasks JOB_ID                         the job's tasks (first 1000)
  task TASK_ID                         one task
  call METHOD PATH [BODY_JSON]         any other call, e.g. call GET /api/stats
  field PATH                           print a field of the JSON on stdin, e.g.
                                       agora.sh claim | agora.sh field data.task.id

Environment:
  AGORA_URL                 server URL (else agora-config.sh get-url)
  AGORA_CONFIG_DIR          config directory (default ~/.agora)
  AGORA_AGENT_ID, AGORA_TOKEN   use these credentials instead of agent.json
  AGORA_REGISTRATION_TOKEN  sent on register when the server requires one
  AGORA_TIMEOUT             seconds per call (default 30; claim adds its wait)
  AGORA_NO_JQ=1             do not use jq (python3, else sed, is used to read JSON)
  AGORA_NO_PYTHON=1         do not use python3 either
  AGORA_VERBOSE=1           start and progress print the whole task

Exit status: 0 ok, 1 the server answered an error, 2 bad usage, 3 server unreachable,
4 claim found nothing pending.
EOF
}

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: %s (see agora.sh -h)\n' "$PROG" "$*" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------
# JSON

is_off() { [[ -n ${1:-} && $1 != 0 ]]; }

if ! is_off "${AGORA_NO_JQ:-}" && command -v jq >/dev/null 2>&1; then
    JSON_TOOL="jq"
elif ! is_off "${AGORA_NO_PYTHON:-}" && command -v python3 >/dev/null 2>&1; then
    JSON_TOOL="python3"
else
    JSON_TOOL="sed"
fi

# A JSON string literal for $1 (quotes, backslashes and control characters escaped).
json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    if [[ $s == *[[:cntrl:]]* ]]; then
        local out='' c i hex
        for ((i = 0; i < ${#s}; i++)); do
            c=${s:i:1}
            if [[ $c == [[:cntrl:]] ]]; then
                printf -v hex '\\u%04x' "'$c"
                out+=$hex
            else
                out+=$c
            fi
        done
        s=$out
    fi
    printf '"%s"' "$s"
}

# Undoes JSON string escapes (for the sed reader).
json_unescape() {
    local s=$1 out='' c ch
    while [[ $s == *\\* ]]; do
        out+=${s%%\\*}
        s=${s#*\\}
        c=${s:0:1}
        case $c in
            n) out+=$'\n' ;;
            t) out+=$'\t' ;;
            r) out+=$'\r' ;;
            b) out+=$'\b' ;;
            f) out+=$'\f' ;;
            u)
                if [[ ${s:1:4} =~ ^[0-9a-fA-F]{4}$ ]]; then
                    printf -v ch '%b' "\\u${s:1:4}"
                    out+=$ch
                    s=${s:4}
                else
                    out+=u
                fi
                ;;
            *) out+=$c ;; # \" \\ \/
        esac
        s=${s:1}
    done
    printf '%s' "$out$s"
}

# json_get JSON PATH: the value at PATH (dot-separated keys and array indices, e.g.
# data.task.id or data.items.0.id). Strings print raw, other values as JSON, null or missing
# print nothing. Without jq or python3, only strings, numbers and booleans can be read, and
# the value is the first one whose key is PATH's last part (enough for the server's compact
# answers: data.agent_id, data.token, data.task.id, error.code, error.message...).
json_get() {
    local json=$1 path=$2
    case $JSON_TOOL in
        jq)
            printf '%s' "$json" | jq -r --arg p "$path" '
                ($p | if . == "" then [] else split(".") end
                    | map(if test("^[0-9]+$") then tonumber else . end)) as $k
                | (try getpath($k) catch null)
                | if . == null then empty elif type == "string" then . else tojson end
            ' 2>/dev/null || true
            ;;
        python3)
            printf '%s' "$json" | python3 -c '
import json, sys
try:
    v = json.loads(sys.stdin.read())
except ValueError:
    sys.exit(0)
for k in [p for p in sys.argv[1].split(".") if p]:
    if isinstance(v, dict):
        v = v.get(k)
    elif isinstance(v, list) and k.isdigit() and int(k) < len(v):
        v = v[int(k)]
    else:
        v = None
    if v is None:
        break
if v is not None:
    sys.stdout.write(v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), ensure_ascii=False))
    sys.stdout.write("\n")
' "$path"
            ;;
        sed)
            local key=${path##*.} re m
            [[ $key =~ ^[A-Za-z0-9_]+$ ]] || return 0
            re='"'$key'":("([^"\\]|\\.)*"|true|false|-?[0-9][0-9.eE+-]*)'
            m=$({ grep -oE "$re" <<<"$json" || true; } | head -n 1)
            [[ -n $m ]] || return 0
            m=${m#\""$key"\":}
            if [[ $m == \"* ]]; then
                m=${m#\"}
                m=${m%\"}
                json_unescape "$m"
                echo
            else
                printf '%s\n' "$m"
            fi
            ;;
    esac
}

# Whether the answer's `data` is null (claim with nothing pending).
data_is_null() {
    local json=$1
    case $JSON_TOOL in
        jq | python3) [[ -z $(json_get "$json" data) ]] ;;
        # serde writes {"success":true,"data":...}: the first "data" key is the envelope's.
        sed) [[ ${json#*\"data\":} == null* ]] ;;
    esac
}

# Whether the answer is a success envelope.
is_success() {
    local json=$1
    case $JSON_TOOL in
        jq | python3) [[ $(json_get "$json" success) == true ]] ;;
        sed) [[ ${json#*\"success\":} == true* ]] ;;
    esac
}

# A JSON argument: literal, `-` for stdin, or @FILE.
json_arg() {
    local v=$1
    case $v in
        -) v=$(cat) ;;
        @*)
            [[ -r ${v#@} ]] || usage_error "cannot read ${v#@}"
            v=$(<"${v#@}")
            ;;
    esac
    [[ -n ${v//[[:space:]]/} ]] || usage_error "empty JSON argument"
    printf '%s' "$v"
}

# ---------------------------------------------------------------------------------------------
# HTTP

base_url() {
    if [[ -n ${AGORA_URL:-} ]]; then
        local u=$AGORA_URL
        while [[ $u == */ ]]; do u=${u%/}; done
        printf '%s' "${u%/api}"
    else
        "$HERE/agora-config.sh" get-url
    fi
}

URL=''
TMP_ERR=''
cleanup() { [[ -z $TMP_ERR ]] || rm -f "$TMP_ERR"; }
trap cleanup EXIT

RESP_BODY=''
RESP_CODE=''

# request METHOD PATH BODY TOKEN MAX_TIME: sets RESP_BODY and RESP_CODE; exits 3 when the
# server cannot be reached and 1 when it does not answer JSON.
request() {
    local method=$1 path=$2 body=$3 token=$4 max_time=$5 out rc=0
    [[ -n $URL ]] || URL=$(base_url)
    [[ -n $TMP_ERR ]] || TMP_ERR=$(mktemp)
    local args=(-sS -X "$method" --connect-timeout 5 --max-time "$max_time"
        -w '\n%{http_code}' -H 'Accept: application/json')
    if [[ -n $body ]]; then
        args+=(-H 'Content-Type: application/json' --data-binary @-)
    fi
    # The token goes through a file descriptor, not the command line (ps would show it).
    out=$(printf '%s' "$body" | curl "${args[@]}" \
        -H @<([[ -z $token ]] || printf 'Authorization: Bearer %s\n' "$token") \
        "$URL$path" 2>"$TMP_ERR") || rc=$?
    if ((rc != 0)); then
        local why
        why=$(head -n 1 "$TMP_ERR")
        printf '%s: cannot reach %s (%s); is the server running? (check: agora-config.sh status)\n' \
            "$PROG" "$URL" "${why:-curl exit $rc}" >&2
        exit 3
    fi
    RESP_CODE=${out##*$'\n'}
    RESP_BODY=${out%$'\n'*}
    if [[ $RESP_BODY != \{* ]]; then
        printf '%s: %s %s answered HTTP %s without JSON: %.200s\n' \
            "$PROG" "$method" "$path" "$RESP_CODE" "${RESP_BODY//$'\n'/ }" >&2
        exit 1
    fi
}

# What to do about an error code.
hint() {
    case $1 in
        VALIDATION_ERROR) echo "fix the field named above and send again" ;;
        MALFORMED_JSON) echo "the body is not valid JSON; check quoting" ;;
        UNAUTHORIZED) echo "token missing, wrong or revoked: register again (agora.sh register NAME)" ;;
        FORBIDDEN) echo "not your task or not your agent id: use the credentials that claimed it" ;;
        NOT_FOUND) echo "unknown id or route: check the id" ;;
        METHOD_NOT_ALLOWED) echo "wrong HTTP method for this path" ;;
        INVALID_STATE) echo "the job or task moved on (timed out, reassigned, finished or cancelled): drop it and claim again" ;;
        LEASE_LOST) echo "this delivery of the task ended (lease expired, released, or given to another agent): drop the work and claim again" ;;
        CONFLICT) echo "already done (e.g. this agent already voted on this job): nothing to do" ;;
        NOT_AN_APPROVER) echo "this server lets only agents with the approver role vote (APPROVERS=role): ask an operator" ;;
        SELF_APPROVAL) echo "you submitted this job or wrote this plan: leave the vote to others" ;;
        PAYLOAD_TOO_LARGE) echo "the body is too large: send a smaller result (store big outputs elsewhere and send a reference)" ;;
        INVALID_PLAN) echo "a plan task must complete with {\"task_specs\": [...]}: fix and complete again (the task is still yours)" ;;
        RATE_LIMITED) echo "approval cooldown: try again after next_allowed_at" ;;
        UNAVAILABLE) echo "the server is shutting down or its database is unreachable: retry later" ;;
        INTERNAL_ERROR) echo "server bug or outage: retry later; report it if it persists" ;;
        *) echo "see the error message" ;;
    esac
}

# Prints the answer; on an error envelope also explains it on stderr and exits 1.
finish() {
    printf '%s\n' "$RESP_BODY"
    if ! is_success "$RESP_BODY"; then
        local code message field next line
        code=$(json_get "$RESP_BODY" error.code)
        message=$(json_get "$RESP_BODY" error.message)
        field=$(json_get "$RESP_BODY" error.field)
        next=$(json_get "$RESP_BODY" error.details.next_allowed_at)
        line="${code:-ERROR} (HTTP $RESP_CODE): ${message:-no message}"
        [[ -z $field ]] || line+=" [field: $field]"
        [[ -z $next ]] || line+=" [next_allowed_at: $next]"
        printf '%s: %s\n%s: hint: %s\n' "$PROG" "$line" "$PROG" "$(hint "$code")" >&2
        exit 1
    fi
}

# A report's answer, short: the task's id, status, progress and lease times, not the spec and
# result the agent already has (AGORA_VERBOSE=1 prints the whole answer). Errors as `finish`.
finish_task() {
    if [[ ${AGORA_VERBOSE:-} == 1 ]] || ! is_success "$RESP_BODY"; then
        finish
        return
    fi
    local fields=() f v
    for f in id status progress deadline lease_expires_at heartbeat_secs; do
        v=$(json_get "$RESP_BODY" "data.$f")
        [[ -n $v ]] || continue
        if [[ $v =~ ^[0-9]+$ ]]; then
            fields+=("\"$f\":$v")
        else
            fields+=("\"$f\":$(json_str "$v")")
        fi
    done
    printf '{"success":true,"data":{%s}}\n' "$(IFS=,; printf '%s' "${fields[*]}")"
}

# ---------------------------------------------------------------------------------------------
# Credentials

AGENT_ID=''
TOKEN=''

load_agent() {
    AGENT_ID=${AGORA_AGENT_ID:-}
    TOKEN=${AGORA_TOKEN:-}
    if [[ (-z $AGENT_ID || -z $TOKEN) && -f $AGENT_FILE ]]; then
        local saved saved_url
        saved=$(<"$AGENT_FILE")
        [[ -n $AGENT_ID ]] || AGENT_ID=$(json_get "$saved" agent_id)
        [[ -n $TOKEN ]] || TOKEN=$(json_get "$saved" token)
        saved_url=$(json_get "$saved" url)
        [[ -n $URL ]] || URL=$(base_url)
        if [[ -n $saved_url && $saved_url != "$URL" ]]; then
            printf '%s: warning: the saved agent was registered on %s, the URL is now %s\n' \
                "$PROG" "$saved_url" "$URL" >&2
        fi
    fi
}

need_agent() {
    load_agent
    [[ -n $AGENT_ID && -n $TOKEN ]] \
        || die "no agent: run 'agora.sh register NAME' first (or set AGORA_AGENT_ID and AGORA_TOKEN)"
}

need_id() {
    [[ ${2:-} =~ ^[A-Za-z0-9-]+$ ]] || usage_error "$1 needs an id, got '${2:-}'"
}

need_uint() {
    [[ ${2:-} =~ ^[0-9]+$ ]] || usage_error "$1 must be a whole number, got '${2:-}'"
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_register() {
    (($# >= 1)) || usage_error "usage: agora.sh register NAME [CAPABILITY...]"
    local name=$1 caps='' c
    shift
    for c in "$@"; do caps+=${caps:+,}$(json_str "$c"); done
    local body
    body="{\"name\":$(json_str "$name")"
    (($# == 0)) || body+=",\"capabilities\":[$caps]"
    body+='}'
    if [[ -f $AGENT_FILE && -z ${AGORA_AGENT_ID:-} ]]; then
        printf '%s: note: replacing the saved agent in %s (unregister it first to leave cleanly)\n' \
            "$PROG" "$AGENT_FILE" >&2
    fi
    request POST /api/agents/register "$body" "${AGORA_REGISTRATION_TOKEN:-}" "$TIMEOUT"
    is_success "$RESP_BODY" || finish
    local id token
    id=$(json_get "$RESP_BODY" data.agent_id)
    token=$(json_get "$RESP_BODY" data.token)
    [[ -n $id && -n $token ]] || die "the answer has no agent_id/token; nothing saved"
    mkdir -p "$CONFIG_DIR"
    local tmp
    tmp=$(umask 077 && mktemp "$CONFIG_DIR/.agent.json.XXXXXX")
    printf '{"agent_id":%s,"token":%s,"url":%s,"name":%s}\n' \
        "$(json_str "$id")" "$(json_str "$token")" "$(json_str "$URL")" "$(json_str "$name")" >"$tmp"
    mv -f "$tmp" "$AGENT_FILE"
    # The token goes into the profile only, never to stdout (it would land in logs and context).
    printf '{"success":true,"data":{"agent_id":%s,"name":%s,"saved_in":%s}}\n' \
        "$(json_str "$id")" "$(json_str "$name")" "$(json_str "$AGENT_FILE")"
    printf '%s: registered %s as %s (token saved in %s)\n' "$PROG" "$name" "$id" "$AGENT_FILE" >&2
}

cmd_whoami() {
    need_agent
    printf '%s\n' "$AGENT_ID"
}

cmd_heartbeat() {
    need_agent
    request POST "/api/agents/$AGENT_ID/heartbeat" '' "$TOKEN" "$TIMEOUT"
    finish
}

# Leases: each claim is a delivery with its own lease_id, kept in $CONFIG_DIR/leases/TASK_ID
# and sent with every report on the task, so a report on a delivery that has ended (expired,
# released, given to another agent) is refused (LEASE_LOST) instead of touching a newer one.
LEASE_DIR=$CONFIG_DIR/leases

save_lease() {
    local task=$1 lease=$2
    [[ $task =~ ^[0-9a-fA-F-]{36}$ && $lease =~ ^[0-9a-fA-F-]{36}$ ]] || return 0
    mkdir -p "$LEASE_DIR"
    printf '%s\n' "$lease" >"$LEASE_DIR/$task"
}

# The task's saved lease id, or nothing.
saved_lease() {
    local file=$LEASE_DIR/$1 lease
    [[ -r $file ]] || return 0
    lease=$(<"$file")
    [[ ! $lease =~ ^[0-9a-fA-F-]{36}$ ]] || printf '%s' "$lease"
}

# ,"lease_id":"..." for the task's saved lease, or nothing.
lease_field() {
    local lease
    lease=$(saved_lease "$1")
    [[ -z $lease ]] || printf ',"lease_id":"%s"' "$lease"
}

# After a report: a finished or lost delivery's lease is of no further use.
drop_lease_if_done() {
    local task=$1
    if is_success "$RESP_BODY" || [[ $(json_get "$RESP_BODY" error.code) == LEASE_LOST ]]; then
        rm -f "$LEASE_DIR/$task"
    fi
}

cmd_claim() {
    local wait=${1:-30}
    need_uint WAIT_SECS "$wait"
    need_agent
    request POST /api/tasks/claim "{\"agent_id\":$(json_str "$AGENT_ID"),\"wait_secs\":$wait}" \
        "$TOKEN" $((TIMEOUT + wait))
    if is_success "$RESP_BODY" && data_is_null "$RESP_BODY"; then
        exit 4 # nothing pending: print nothing
    fi
    if is_success "$RESP_BODY"; then
        save_lease "$(json_get "$RESP_BODY" data.task.id)" "$(json_get "$RESP_BODY" data.lease_id)"
    fi
    finish
}

cmd_start() {
    (($# == 1 || $# == 2)) || usage_error "usage: agora.sh start TASK_ID [HEARTBEAT_SECS]"
    need_id TASK_ID "$1"
    local fields=() lease
    lease=$(saved_lease "$1")
    [[ -z $lease ]] || fields+=("\"lease_id\":\"$lease\"")
    if [[ -n ${2:-} ]]; then
        need_uint HEARTBEAT_SECS "$2"
        fields+=("\"heartbeat_secs\":$2")
    fi
    local body
    body="{$(IFS=,; printf '%s' "${fields[*]}")}"
    need_agent
    request POST "/api/tasks/$1/start" "$body" "$TOKEN" "$TIMEOUT"
    finish_task
}

cmd_progress() {
    (($# >= 2 && $# <= 4)) || usage_error "usage: agora.sh progress TASK_ID PERCENT [MESSAGE] [EXTEND_SECS]"
    need_id TASK_ID "$1"
    need_uint PERCENT "$2"
    local body="{\"progress\":$2"
    [[ -z ${3:-} ]] || body+=",\"message\":$(json_str "$3")"
    if [[ -n ${4:-} ]]; then
        need_uint EXTEND_SECS "$4"
        body+=",\"extend_secs\":$4"
    fi
    body+="$(lease_field "$1")}"
    need_agent
    request POST "/api/tasks/$1/progress" "$body" "$TOKEN" "$TIMEOUT"
    finish_task
}

# Completes task $2 with result $3 ($1: the query, "" or "?next=true").
complete_request() {
    need_id TASK_ID "$2"
    local result
    result=$(json_arg "$3")
    need_agent
    request POST "/api/tasks/$2/complete$1" "{\"result\":$result$(lease_field "$2")}" "$TOKEN" "$TIMEOUT"
    drop_lease_if_done "$2"
}

cmd_complete() {
    (($# == 2)) || usage_error "usage: agora.sh complete TASK_ID RESULT_JSON"
    complete_request "" "$@"
    finish
}

cmd_complete_next() {
    (($# == 2)) || usage_error "usage: agora.sh complete-next TASK_ID RESULT_JSON"
    complete_request "?next=true" "$@"
    if is_success "$RESP_BODY"; then
        # The next claim, if any. The sed reader finds a key's first occurrence, so it reads
        # from where the claim starts (its task's first field is its id).
        local claim=
        case $JSON_TOOL in
            sed) [[ $RESP_BODY != *'"next":{"task":'* ]] || claim="{\"task\":${RESP_BODY##*\"next\":\{\"task\":}" ;;
            *) claim=$(json_get "$RESP_BODY" data.next) ;;
        esac
        [[ -z $claim ]] || save_lease "$(json_get "$claim" task.id)" "$(json_get "$claim" lease_id)"
    fi
    finish
}

cmd_fail() {
    (($# == 2 || $# == 3)) || usage_error "usage: agora.sh fail TASK_ID ERROR [true|false]"
    need_id TASK_ID "$1"
    local retryable=${3:-true}
    [[ $retryable == true || $retryable == false ]] || usage_error "retryable must be true or false"
    need_agent
    request POST "/api/tasks/$1/fail" "{\"error\":$(json_str "$2"),\"retryable\":$retryable$(lease_field "$1")}" \
        "$TOKEN" "$TIMEOUT"
    drop_lease_if_done "$1"
    finish
}

cmd_task() {
    need_id TASK_ID "${1:-}"
    request GET "/api/tasks/$1" '' '' "$TIMEOUT"
    finish
}

# vote PATH_TAIL JOB_ID FIELD TEXT: approve/reject a job or its plan as the saved agent.
vote() {
    local tail=$1 job=$2 field=$3 text=${4:-}
    need_id JOB_ID "$job"
    need_agent
    local body
    body="{\"agent_id\":$(json_str "$AGENT_ID")"
    [[ -z $text ]] || body+=",\"$field\":$(json_str "$text")"
    body+='}'
    request POST "/api/jobs/$job/$tail" "$body" "$TOKEN" "$TIMEOUT"
    finish
}

cmd_approve() {
    (($# == 1 || $# == 2)) || usage_error "usage: agora.sh approve JOB_ID [COMMENT]"
    vote approve "$1" comment "${2:-}"
}

cmd_reject() {
    (($# == 2)) || usage_error "usage: agora.sh reject JOB_ID REASON"
    vote reject "$1" reason "$2"
}

cmd_plan_approve() {
    (($# == 1 || $# == 2)) || usage_error "usage: agora.sh plan-approve JOB_ID [COMMENT]"
    vote plan/approve "$1" comment "${2:-}"
}

cmd_plan_reject() {
    (($# == 2)) || usage_error "usage: agora.sh plan-reject JOB_ID REASON"
    vote plan/reject "$1" reason "$2"
}

cmd_approvals() {
    need_id JOB_ID "${1:-}"
    request GET "/api/jobs/$1/approvals" '' '' "$TIMEOUT"
    finish
}

cmd_can_approve() {
    local id=${1:-}
    if [[ -z $id ]]; then
        need_agent
        id=$AGENT_ID
    fi
    need_id AGENT_ID "$id"
    request GET "/api/agents/$id/can-approve" '' '' "$TIMEOUT"
    finish
}

cmd_submit() {
    (($# == 2 || $# == 3)) || usage_error "usage: agora.sh submit TITLE SPEC_JSON [PRIORITY]"
    local spec body
    spec=$(json_arg "$2")
    body="{\"title\":$(json_str "$1"),\"job_spec\":$spec"
    if [[ -n ${3:-} ]]; then
        [[ $3 =~ ^-?[0-9]+$ ]] || usage_error "PRIORITY must be an integer, got '$3'"
        body+=",\"priority\":$3"
    fi
    load_agent
    if [[ -n $AGENT_ID && -n $TOKEN ]]; then
        body+=",\"submitted_by\":$(json_str "$AGENT_ID")"
    fi
    body+='}'
    request POST /api/jobs "$body" "$TOKEN" "$TIMEOUT"
    finish
}

cmd_job() {
    need_id JOB_ID "${1:-}"
    request GET "/api/jobs/$1" '' '' "$TIMEOUT"
    finish
}

cmd_tasks() {
    need_id JOB_ID "${1:-}"
    request GET "/api/jobs/$1/tasks?limit=1000" '' '' "$TIMEOUT"
    finish
}

cmd_unregister() {
    need_agent
    request DELETE "/api/agents/$AGENT_ID" '' "$TOKEN" "$TIMEOUT"
    finish
    if [[ -f $AGENT_FILE && $(json_get "$(<"$AGENT_FILE")" agent_id) == "$AGENT_ID" ]]; then
        rm -f "$AGENT_FILE"
        printf '%s: unregistered %s and removed %s\n' "$PROG" "$AGENT_ID" "$AGENT_FILE" >&2
    else
        printf '%s: unregistered %s\n' "$PROG" "$AGENT_ID" >&2
    fi
}

cmd_call() {
    (($# == 2 || $# == 3)) || usage_error "usage: agora.sh call METHOD PATH [BODY_JSON]"
    local method=${1^^} path=$2 body=''
    [[ $path == /* ]] || usage_error "PATH must start with /, e.g. /api/stats"
    [[ -z ${3:-} ]] || body=$(json_arg "$3")
    load_agent
    request "$method" "$path" "$body" "$TOKEN" "$TIMEOUT"
    finish
}

cmd_field() {
    (($# == 1)) || usage_error "usage: agora.sh field PATH < answer.json"
    local json
    json=$(cat)
    json_get "$json" "$1"
}

main() {
    if (($# == 0)); then
        usage >&2
        exit 2
    fi
    local cmd=$1
    shift
    case $cmd in
        -h | --help | help) usage ;;
        register) cmd_register "$@" ;;
        whoami) cmd_whoami ;;
        heartbeat) cmd_heartbeat ;;
        claim) (($# <= 1)) || usage_error "usage: agora.sh claim [WAIT_SECS]"; cmd_claim "$@" ;;
        start) cmd_start "$@" ;;
        progress) cmd_progress "$@" ;;
        complete) cmd_complete "$@" ;;
        fail) cmd_fail "$@" ;;
        complete-next) cmd_complete_next "$@" ;;
        task) (($# == 1)) || usage_error "usage: agora.sh task TASK_ID"; cmd_task "$@" ;;
        approve) cmd_approve "$@" ;;
        reject) cmd_reject "$@" ;;
        plan-approve) cmd_plan_approve "$@" ;;
        plan-reject) cmd_plan_reject "$@" ;;
        approvals) (($# == 1)) || usage_error "usage: agora.sh approvals JOB_ID"; cmd_approvals "$@" ;;
        can-approve) (($# <= 1)) || usage_error "usage: agora.sh can-approve [AGENT_ID]"; cmd_can_approve "$@" ;;
        submit) cmd_submit "$@" ;;
        job) (($# == 1)) || usage_error "usage: agora.sh job JOB_ID"; cmd_job "$@" ;;
        tasks) (($# == 1)) || usage_error "usage: agora.sh tasks JOB_ID"; cmd_tasks "$@" ;;
        unregister) cmd_unregister ;;
        call) cmd_call "$@" ;;
        field) cmd_field "$@" ;;
        *) usage_error "unknown command '$cmd'" ;;
    esac
}

main "$@"
