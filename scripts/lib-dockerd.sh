# shellcheck shell=bash
# Docker engine helpers for scripts/setup.sh. Sourced, not run.
#
# There is no systemd on the lab machines, so when no engine answers we start
# dockerd ourselves: in its own session (setsid + nohup), logging to
# /var/log/tracer-dockerd.log, pid in /run/tracer/dockerd.pid. An engine that
# already answers (however it was started) is left alone. If the lab had
# switched the engine's userland proxy off (`tracer lab up
# --no-userland-proxy` keeps dockerd's arguments in the lab's state), dockerd
# is started as that record says, so the lab's record stays true; a record
# that cannot be followed (or a dockerd that does not come up with it) is said
# in one line and plain dockerd started instead.

TRACER_DOCKERD_LOG=${TRACER_DOCKERD_LOG:-/var/log/tracer-dockerd.log}
TRACER_DOCKERD_PIDFILE=${TRACER_DOCKERD_PIDFILE:-/run/tracer/dockerd.pid}
TRACER_DOCKERD_WAIT=${TRACER_DOCKERD_WAIT:-60}
TRACER_LAB_STATE=${TRACER_LAB_STATE:-}  # the lab's state file (empty: the lab's own; tests give another)
tracer_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

docker_answers() {
    timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# wait_for_docker SECONDS [PID]: the engine answers within SECONDS; given
# the pid of the dockerd just started, its exit ends the wait at once.
wait_for_docker() {
    local deadline=$((SECONDS + $1)) pid=${2:-}
    while ((SECONDS < deadline)); do
        docker_answers && return 0
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            docker_answers  # it may have answered just before it went
            return
        fi
        sleep 0.5
    done
    return 1
}

ensure_dockerd() {
    if docker_answers; then
        echo "docker: engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers (left alone)"
        return 0
    fi
    if ! command -v dockerd >/dev/null; then
        echo "docker: dockerd is not installed (apt-get install docker.io)" >&2
        return 1
    fi
    if pgrep -x dockerd >/dev/null; then
        # one is starting (or hung): give it the same grace period before starting another
        echo "docker: a dockerd process exists but does not answer yet; waiting up to ${TRACER_DOCKERD_WAIT}s"
        if wait_for_docker "$TRACER_DOCKERD_WAIT"; then
            echo "docker: engine answers"
            return 0
        fi
        echo "docker: dockerd (pid $(pgrep -x dockerd | tr '\n' ' ')) does not answer; see its log, stop it, rerun" >&2
        return 1
    fi
    mkdir -p "$(dirname "$TRACER_DOCKERD_PIDFILE")"
    # a dockerd killed with SIGKILL leaves its pid file; dockerd itself handles a stale one
    local dockerd_cmd=(dockerd)
    recorded_dockerd_cmd
    if [[ ${dockerd_cmd[*]} != dockerd ]] && ! command -v "${dockerd_cmd[0]}" >/dev/null; then
        record_unusable "${dockerd_cmd[0]} is not installed"
        dockerd_cmd=(dockerd)
    fi
    start_dockerd && return 0
    if [[ ${dockerd_cmd[*]} != dockerd ]]; then
        # the recorded arguments may no longer suit this engine (a flag daemon.json now sets too)
        stop_started_dockerd
        record_unusable "dockerd as recorded did not answer; its log: $TRACER_DOCKERD_LOG"
        dockerd_cmd=(dockerd)
        start_dockerd && return 0
    fi
    echo "docker: dockerd did not answer within ${TRACER_DOCKERD_WAIT}s; last log lines:" >&2
    tail -n 15 "$TRACER_DOCKERD_LOG" >&2 || true
    return 1
}

# start_dockerd: dockerd_cmd (the caller's array) started in its own session;
# true once the engine answers.
start_dockerd() {
    echo "docker: starting ${dockerd_cmd[*]} (log $TRACER_DOCKERD_LOG)"
    setsid nohup "${dockerd_cmd[@]}" >>"$TRACER_DOCKERD_LOG" 2>&1 </dev/null &
    echo $! >"$TRACER_DOCKERD_PIDFILE"
    if wait_for_docker "$TRACER_DOCKERD_WAIT" "$!"; then
        echo "docker: dockerd pid $(cat "$TRACER_DOCKERD_PIDFILE") answers"
        return 0
    fi
    return 1
}

# stop_started_dockerd: the dockerd start_dockerd started (pid file) ended,
# so another can take its place: SIGTERM, SIGKILL after 20 s.
stop_started_dockerd() {
    local pid i
    pid=$(cat "$TRACER_DOCKERD_PIDFILE")
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# record_unusable REASON: the one line saying setup starts plain dockerd
# instead of following the lab's record.
record_unusable() {
    echo "docker: the lab's record of dockerd's arguments cannot be used ($1): starting plain dockerd," \
        "userland proxy on, not as the lab recorded (\`tracer lab up\` sets the record right)" >&2
}

# dockerd_cmd (the caller's array) as the lab's record says dockerd runs, if
# the lab switched it; a record that cannot be used is said, and left out.
recorded_dockerd_cmd() {
    local out
    out=$(mktemp)
    if PYTHONPATH="$tracer_repo" python3 -c 'import sys; from tracer.lab_dockerd import print_recorded_argv
sys.exit(print_recorded_argv(*sys.argv[1:]))' ${TRACER_LAB_STATE:+"$TRACER_LAB_STATE"} >"$out"; then
        if [[ -s $out ]]; then
            mapfile -d '' -t dockerd_cmd <"$out"
            echo "docker: the lab had switched dockerd's userland proxy off (tracer lab up --no-userland-proxy);" \
                "starting dockerd as the lab recorded it"
        fi
    else
        record_unusable above
    fi
    rm -f "$out"
}
