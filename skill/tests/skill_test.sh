#!/usr/bin/env bash
# End-to-end test of the Agora skill scripts against a running server.
#
#   skill/tests/skill_test.sh URL [MODE...]
#
# Runs the whole job lifecycle (six agents, five approvals, a plan with two tasks, a retried
# failure, completion) with agora-config.sh and agora.sh only, once per JSON mode:
#   jq       jq on PATH (the scripts use it)
#   python3  AGORA_NO_JQ=1: the scripts read JSON with python3
#   sed      a PATH without jq and python3: the scripts' sed/grep fallback
# Default: every mode whose tools exist. Each mode registers six fresh agents (an agent may
# approve once per APPROVAL_COOLDOWN_SECS), each with its own temporary AGORA_CONFIG_DIR.
# The server must use the default APPROVALS_REQUIRED=5 and have no REGISTRATION_TOKEN.
set -euo pipefail

usage() {
    sed -n '2,13s/^# \{0,1\}//p' "$0"
}

if (($# == 0)); then
    usage >&2
    exit 2
fi
case $1 in
    -h | --help)
        usage
        exit 0
        ;;
esac

URL=$1
shift
while [[ $URL == */ ]]; do URL=${URL%/}; done
SKILL=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGORA=$SKILL/scripts/agora.sh
CONFIG=$SKILL/scripts/agora-config.sh
BAD_URL=http://127.0.0.1:1
UUID_RE='^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/agora-skill-test.XXXXXX")
cleanup() { rm -rf "$ROOT"; }
trap cleanup EXIT

MODE=setup
step() { printf '[%s] %s\n' "$MODE" "$*"; }
fail() {
    printf 'FAIL [%s]: %s\n' "$MODE" "$*" >&2
    exit 1
}

# ag N ARGS...: agora.sh as agent N (its own config dir). Sets OUT, ERR and RC.
OUT=''
ERR=''
RC=0
ag() {
    local n=$1
    shift
    RC=0
    OUT=$(AGORA_CONFIG_DIR=$ROOT/$MODE/agent$n "$AGORA" "$@" 2>"$ROOT/stderr") || RC=$?
    ERR=$(<"$ROOT/stderr")
}

# cfg N ARGS...: agora-config.sh for agent N.
cfg() {
    local n=$1
    shift
    RC=0
    OUT=$(AGORA_CONFIG_DIR=$ROOT/$MODE/agent$n "$CONFIG" "$@" 2>"$ROOT/stderr") || RC=$?
    ERR=$(<"$ROOT/stderr")
}

# The last call must have succeeded.
ok() {
    ((RC == 0)) || fail "$1: exit $RC; stderr: $ERR; stdout: $OUT"
}

# The last call must have failed with this exit status and error code.
refused() {
    local code=$1 what=$2
    ((RC == 1)) || fail "$what: expected exit 1 ($code), got $RC; stdout: $OUT; stderr: $ERR"
    [[ $ERR == *"$code"* ]] || fail "$what: expected $code on stderr, got: $ERR"
}

# get PATH: a field of OUT, read by agora.sh in the current mode.
get() {
    printf '%s' "$OUT" | "$AGORA" field "$1"
}

expect() {
    local what=$1 want=$2 got=$3
    [[ $got == "$want" ]] || fail "$what: expected '$want', got '$got'"
}

# On failure, cancel the mode's job so that its tasks do not linger in the queue (and get
# claimed by the next run).
JOB=''
cancel_job() {
    local rc=$?
    if ((rc != 0)) && [[ -n $JOB ]]; then
        AGORA_URL=$URL AGORA_CONFIG_DIR=$ROOT/$MODE/nobody "$AGORA" call POST "/api/jobs/$JOB/cancel" \
            '{"reason": "the skill test failed"}' >/dev/null 2>&1 \
            && echo "[$MODE] cancelled job $JOB" >&2
    fi
    return "$rc"
}

run_mode() {
    MODE=$1
    trap cancel_job EXIT
    mkdir -p "$ROOT/$MODE"
    case $MODE in
        jq)
            command -v jq >/dev/null || fail "jq is not installed"
            ;;
        python3)
            command -v python3 >/dev/null || fail "python3 is not installed"
            export AGORA_NO_JQ=1
            ;;
        sed)
            # A PATH with only what the scripts need: no jq, no python3.
            local bin=$ROOT/sed/bin c p
            mkdir -p "$bin"
            for c in bash env curl cat head grep sed mktemp mv rm mkdir dirname; do
                p=$(command -v "$c") || fail "$c is not installed"
                ln -s "$p" "$bin/$c"
            done
            export PATH=$bin
            if command -v jq >/dev/null || command -v python3 >/dev/null; then
                fail "jq or python3 still on PATH"
            fi
            ;;
        *) fail "unknown mode $MODE (jq, python3 or sed)" ;;
    esac

    step "1. set-url with an unreachable URL fails clearly"
    cfg 0 set-url "$BAD_URL"
    ((RC == 1)) || fail "set-url $BAD_URL: expected exit 1, got $RC"
    [[ $ERR == *"cannot reach $BAD_URL"*"is the server running?"* ]] \
        || fail "set-url $BAD_URL: unclear message: $ERR"
    [[ ! -e $ROOT/$MODE/agent0/config.json ]] || fail "set-url $BAD_URL wrote the config"
    step "   -> $ERR"

    step "2. set-url with the server's URL succeeds (agents 0-6)"
    local i
    for i in 0 1 2 3 4 5 6; do
        cfg "$i" set-url "$URL/"
        ok "set-url $URL"
        cfg "$i" get-url
        ok "get-url"
        expect "get-url" "$URL" "$OUT"
    done
    cfg 0 status
    ok "status"
    AGORA_URL=$BAD_URL cfg 0 status
    ((RC == 1)) || fail "status with AGORA_URL=$BAD_URL: expected exit 1, got $RC"
    cfg 0 reset
    ok "reset"
    [[ ! -e $ROOT/$MODE/agent0/config.json ]] || fail "reset left config.json"
    cfg 0 get-url
    expect "get-url after reset" "http://localhost:3000" "$OUT"

    step "3. register six agents"
    local ids=()
    for i in 1 2 3 4 5 6; do
        ag "$i" register "skill-$MODE-$i" shell "curl \"quoted\""
        ok "register agent $i"
        ids[i]=$(get data.agent_id)
        [[ ${ids[i]} =~ $UUID_RE ]] || fail "register agent $i: agent_id '${ids[i]}'"
        [[ $OUT != *token* ]] || fail "register agent $i printed its token: $OUT"
        [[ -f $ROOT/$MODE/agent$i/agent.json ]] || fail "register agent $i: agent.json not saved"
        [[ $(<"$ROOT/$MODE/agent$i/agent.json") == *'"token":"'?* ]] \
            || fail "register agent $i: no token in agent.json"
        ag "$i" whoami
        ok "whoami"
        expect "whoami agent $i" "${ids[i]}" "$OUT"
    done

    step "4. agent 6 submits a job (title with quotes, a backslash and a newline)"
    local title
    title=$(printf 'Skill test (%s): "quoted" \\ back\nsecond line' "$MODE")
    ag 6 submit "$title" '{"goal": "write two files", "files": ["a.txt", "b.txt"]}' 1000
    ok "submit"
    local job
    job=$(get data.id)
    [[ $job =~ $UUID_RE ]] || fail "submit: job id '$job'"
    JOB=$job
    expect "job status" committed "$(get data.status)"
    expect "submitted_by" "${ids[6]}" "$(get data.submitted_by)"
    ag 1 job "$job"
    ok "job"
    expect "title round trip" "$title" "$(get data.title)"
    step "   job $job"

    step "5. five other agents approve it (the submitter may not)"
    ag 6 approve "$job"
    refused SELF_APPROVAL "the submitter approves its own job"
    for i in 1 2 3 4 5; do
        ag "$i" approve "$job" "looks fine to agent $i: \"ship it\""
        ok "approve by agent $i"
        if ((i < 5)); then
            expect "job status after $i approvals" approving "$(get data.job.status)"
        else
            expect "job status after 5 approvals" accepted "$(get data.job.status)"
        fi
        expect "approvals" "$i" "$(get data.job.approvals)"
    done

    step "6. cooldown: agent 1 may not approve again; agent 6 may not approve an accepted job"
    ag 1 can-approve
    ok "can-approve"
    expect "can_approve of agent 1" false "$(get data.can_approve)"
    [[ -n $(get data.next_allowed_at) ]] || fail "can-approve: no next_allowed_at"
    ag 6 can-approve
    ok "can-approve"
    expect "can_approve of agent 6" true "$(get data.can_approve)"
    ag 6 approve "$job"
    refused INVALID_STATE "approve an accepted job"

    step "7. agent 6 claims the plan task"
    ag 6 claim 10
    ok "claim plan"
    local plan
    plan=$(get data.task.id)
    [[ $plan =~ $UUID_RE ]] || fail "claim plan: task id '$plan' (answer: $OUT)"
    expect "plan task type" plan "$(get data.task.type)"
    expect "plan task index" 0 "$(get data.task.index)"
    ag 6 start "$plan"
    ok "start plan"
    expect "plan status" running "$(get data.status)"
    ag 6 progress "$plan" 50 "splitting the job" 600
    ok "progress plan"
    expect "plan progress" 50 "$(get data.progress)"

    step "8. a plan without task_specs is refused (422) and the task stays running"
    ag 6 complete "$plan" '{"tasks": []}'
    refused INVALID_PLAN "complete plan without task_specs"
    ag 6 task "$plan"
    ok "task"
    expect "plan status after INVALID_PLAN" running "$(get data.status)"

    step "9. agent 6 completes the plan with two task_specs"
    ag 6 complete "$plan" '{"task_specs": [{"file": "a.txt"}, {"file": "b.txt"}]}'
    ok "complete plan"
    expect "plan status" completed "$(get data.status)"
    ag 6 job "$job"
    ok "job"
    expect "job status after plan" ready "$(get data.status)"
    expect "tasks_total" 3 "$(get data.tasks_total)"

    step "10. agents 1 and 2 claim one work task each"
    ag 1 claim 10
    ok "claim by agent 1"
    local t1 t2
    t1=$(get data.task.id)
    expect "agent 1's task type" work "$(get data.task.type)"
    expect "agent 1's task index" 1 "$(get data.task.index)"
    ag 2 claim 10
    ok "claim by agent 2"
    t2=$(get data.task.id)
    expect "agent 2's task index" 2 "$(get data.task.index)"
    [[ $t1 =~ $UUID_RE && $t2 =~ $UUID_RE && $t1 != "$t2" ]] || fail "claims: '$t1' and '$t2'"
    ag 2 start "$t1"
    refused FORBIDDEN "start another agent's task"

    step "11. agent 1 fails its task (retryable); agent 3 claims it again and completes it"
    local lease1=$ROOT/$MODE/agent1/leases/$t1
    [[ -s $lease1 ]] || fail "claim did not keep the lease of task $t1"
    local saved
    saved=$(<"$lease1") # (bash only: the sed mode's PATH has no cp)
    ag 1 fail "$t1" "disk full: \"a.txt\" not written
second line"
    ok "fail"
    expect "status after a retryable failure" pending "$(get data.status)"
    expect "attempts" 1 "$(get data.attempts)"
    [[ ! -e $lease1 ]] || fail "the lease of a failed delivery was kept"
    ag 3 claim 10
    ok "claim by agent 3"
    expect "agent 3 gets the retried task" "$t1" "$(get data.task.id)"
    # Agent 1 reports on its ended delivery: the script sends the lease it kept, and the server
    # refuses it (without the lease it would be FORBIDDEN, another agent's task).
    printf '%s\n' "$saved" >"$lease1"
    ag 1 progress "$t1" 5
    refused LEASE_LOST "a report on an ended delivery"
    ag 3 start "$t1" 600
    ok "start with a heartbeat lease"
    expect "heartbeat_secs" 600 "$(get data.heartbeat_secs)"
    ag 3 progress "$t1" 90 "almost: \"a.txt\""
    ok "progress"
    OUT=$(printf '{"file": "a.txt", "bytes": 42}' | AGORA_CONFIG_DIR=$ROOT/$MODE/agent3 "$AGORA" complete "$t1" - 2>"$ROOT/stderr") \
        || fail "complete from stdin: $(<"$ROOT/stderr")"
    expect "task 1 status" completed "$(get data.status)"

    step "12. agent 2 completes its task (result from a file) and asks for its next: none"
    printf '{"file": "b.txt", "bytes": 7}' >"$ROOT/$MODE/result.json"
    ag 2 progress "$t2" 10
    ok "progress (starts a claimed task)"
    expect "task 2 status" running "$(get data.status)"
    ag 2 complete-next "$t2" "@$ROOT/$MODE/result.json"
    ok "complete-next from file"
    expect "task 2 status" completed "$(get data.task.status)"
    expect "task 2 result" 7 "$(get data.task.result.bytes)"
    expect "no next task (none pending)" "" "$(get data.next)"

    step "13. nothing is pending: claim prints nothing and exits 4"
    ag 4 claim 1
    ((RC == 4)) || fail "empty claim: expected exit 4, got $RC ($ERR)"
    expect "empty claim output" "" "$OUT"

    step "14. the job is completed"
    ag 5 job "$job"
    ok "job"
    expect "job status" completed "$(get data.status)"
    expect "tasks_completed" 3 "$(get data.tasks_completed)"
    expect "tasks_failed" 0 "$(get data.tasks_failed)"

    step "15. votes with reasons: the submitter may not vote; agent 6 rejects a second job"
    ag 1 submit "Skill test ($MODE): to be rejected" '{"goal": "drop the database"}'
    ok "submit a second job"
    local doomed
    doomed=$(get data.id)
    ag 6 reject "$doomed"
    ((RC == 2)) || fail "reject without a reason: expected exit 2 (usage), got $RC"
    ag 1 reject "$doomed" "my own job"
    refused SELF_APPROVAL "the submitter rejects its own job"
    ag 6 plan-approve "$doomed"
    refused INVALID_STATE "plan-approve a job without a plan under review"
    ag 6 reject "$doomed" "drops the production database"
    ok "reject"
    expect "verdict" reject "$(get data.approval.verdict)"
    expect "job status after a rejection" failed "$(get data.job.status)"
    ag 6 approvals "$doomed"
    ok "approvals"
    expect "the rejection's reason" "drops the production database" "$(get data.0.reason)"

    step "16. every agent unregisters"
    for i in 1 2 3 4 5 6; do
        ag "$i" unregister
        ok "unregister agent $i"
        expect "unregistered agent's id" "${ids[i]}" "$(get data.id)"
        [[ ! -e $ROOT/$MODE/agent$i/agent.json ]] || fail "unregister left agent.json"
    done
    ag 1 unregister
    ((RC == 1)) || fail "unregister without an agent: expected exit 1, got $RC"
    AGORA_AGENT_ID=${ids[1]} AGORA_TOKEN=not-a-token ag 1 heartbeat
    refused UNAUTHORIZED "heartbeat with a bad token"

    step "PASS"
}

MODES=("$@")
if ((${#MODES[@]} == 0)); then
    command -v jq >/dev/null && MODES+=(jq)
    command -v python3 >/dev/null && MODES+=(python3)
    MODES+=(sed)
fi

MODE=setup
step "server $URL, modes: ${MODES[*]}"
curl -sS --max-time 5 "$URL/api/health" >/dev/null || fail "no server answers at $URL/api/health"
# The test claims whatever is pending: it needs a queue with nothing pending in it.
STATS=$(curl -sS --max-time 5 "$URL/api/stats")
if [[ $STATS =~ \"pending\":[1-9] ]]; then
    fail "the server has pending tasks ($STATS); run the test on a server of its own"
fi

for m in "${MODES[@]}"; do
    # A subshell per mode (its PATH and switches stay there). Not `(...) || ...`: that would
    # turn errexit off inside it.
    set +e
    (
        set -e
        run_mode "$m"
    )
    rc=$?
    set -e
    if ((rc != 0)); then
        echo "skill test FAILED in mode $m" >&2
        exit 1
    fi
done
echo "skill test passed (${MODES[*]})"
