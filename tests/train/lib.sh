# Shared helpers of the end-to-end training tests (sourced by tests/train/*.sh).
# Every script is called as: SCRIPT MPIEXEC DATA WORKDIR, with OMNIMOE and OMNI_SOURCE_DIR
# set by CTest. DATA is the demo dataset made once by the train_data fixture.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh" # bin, src, flags, fail
mpiexec=${1:?MPIEXEC} data=${2:?DATA} work=${3:?WORKDIR}
here=$src/tests/train
exp=$here/tiny.yaml
py=${OMNI_PYTHON:-python3} # CTest's python3 (tests/train/CMakeLists.txt), not common.sh's

rm -rf "$work" && mkdir -p "$work" || fail "cannot make $work"
cd "$work" || fail "cannot enter $work"

# cmdline NP OUT [omnimoe train flags...]: sets the array cmd to the command that trains
# the tiny experiment on NP processes into directory OUT.
cmdline() {
    local np=$1 out=$2
    shift 2
    cmd=("$mpiexec" -n "$np" "${flags[@]}" "$bin" train "$exp" --set "data.files=[$data]"
        --set "experiment.out_dir=$out" "$@")
}

# train NP OUT [flags...]: run it, output in OUT.log; returns mpiexec's exit status.
train() {
    cmdline "$@"
    "${cmd[@]}" >"$2.log" 2>&1
}

# start NP OUT [flags...]: run it in the background, in a process group of its own (so a
# hung job can be killed whole); $job is mpiexec's pid.
start() {
    cmdline "$@"
    set -m
    "${cmd[@]}" >"$2.log" 2>&1 &
    job=$!
    set +m
}

# must_train NP OUT [flags...]: train, and fail the test with its log if it fails.
must_train() {
    train "$@" || {
        tail -n 30 "$2.log" >&2
        fail "training into $2 on $1 processes failed"
    }
}

# check CMD ARGS...: run the metrics checker (tests/train/jsonl.py); its verdict is printed.
check() {
    "$py" "$here/jsonl.py" "$@" || fail "jsonl.py $*"
}

# wait_lines FILE N SECONDS: wait until FILE has N lines; false on timeout.
wait_lines() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        [[ -f $1 && $(wc -l <"$1") -ge $2 ]] && return 0
        sleep 0.05
    done
    return 1
}

# rank_pid JOB RANK: the pid of MPI rank RANK among the processes started by the mpiexec
# of pid JOB (Open MPI puts OMPI_COMM_WORLD_RANK in each rank's environment).
rank_pid() {
    local p
    for p in $(pgrep -P "$1"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# ends_within JOB SECONDS: wait for the background job to end; kill it and fail if it hangs.
# Sets $rc to its exit status.
ends_within() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$1" 2>/dev/null; then
        kill -9 -- "-$1"
        wait "$1" 2>/dev/null
        fail "the job did not end within $2 s"
    fi
    wait "$1"
    rc=$?
}
