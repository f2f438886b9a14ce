# The preamble shared by the shell tests (tests/*/*.sh), sourced first thing:
#   . "$(dirname "$0")/../lib/common.sh"
# (tests/train/lib.sh sources it for the training tests). CTest gives every script test
# OMNIMOE, OMNI_SOURCE_DIR and OMNI_BINARY_DIR (tests/CMakeLists.txt).
set -u
bin=${OMNIMOE:?set by CTest}
src=${OMNI_SOURCE_DIR:?set by CTest}
# The python that has h5py and numpy (Debian's); it leaves no __pycache__ in the sources
# when a test's script imports a module beside it.
py=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1
# mpiexec's flags: more processes than cores, no pinning (tests share the machine).
flags=(--oversubscribe --bind-to none)

# fail MESSAGE: the test fails here: "FAIL: MESSAGE" on stderr, exit status 1.
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# A script that goes on after a failed check counts instead: count_fail MESSAGE prints
# "FAIL: MESSAGE" on stdout and counts it in $fails, count_pass counts a check passed in
# $passes; the script ends with a line of the counts and [[ $fails -eq 0 ]].
fails=0 passes=0
count_fail() {
    echo "FAIL: $*"
    fails=$((fails + 1))
}
count_pass() { passes=$((passes + 1)); }

# make_tmp: $tmp, a new directory, removed when the script exits.
make_tmp() {
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
}

# mpi NP COMMAND...: COMMAND on NP processes under $mpiexec (set by a script that CTest
# passes it to), else the mpiexec on PATH.
mpi() { "${mpiexec:-mpiexec}" -n "$1" "${flags[@]}" "${@:2}"; }
