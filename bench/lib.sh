# bench/lib.sh — what the side-by-side bench scripts share (bench/gemm/backends.sh,
# bench/torch/vs_torch.sh, bench/train/bf16.sh), sourced after the script sets its name,
# its defaults and the options it takes:
#
#   me=backends.sh opts="brscnt" help="2,13"   # -b -r -s -c -n -t, usage on lines 2-13
#   repeats=2 steps=2 np=1 threads=1
#   . "$(dirname "$0")/../lib.sh"
#   bench_parse "$@"      # -b BUILD -r REPEATS -s STEPS -c CONFIG -n NP -t THREADS -h
#   bench_setup omni-x    # checks the programs, makes $tmp with the demo data, sets $mpi
#
# Then $bench (bench_train), $omnimoe, $tmp/demo.h5, $mpi and `field FILE KEY` (a value of
# a RESULT line) are at hand. POSIX sh.

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build="$src/build"
config="$src/configs/bench-torch.yaml"

bench_die() { # MESSAGE [STATUS]
    echo "$me: $1" >&2
    exit "${2:-2}"
}

bench_parse() {
    while [ $# -gt 0 ]; do
        o=${1#-}
        case "$1" in
        -h | --help) sed -n "${help}p" "$0"; exit 0 ;;
        -?) case "$opts" in *"$o"*) ;; *) bench_die "unknown argument $1" ;; esac
            [ $# -ge 2 ] || bench_die "$1 needs a value" ;;
        *) bench_die "unknown argument $1" ;;
        esac
        case "$o" in
        b) build=$2 ;;
        r) repeats=$2 ;;
        s) steps=$2 ;;
        c) config=$2 ;;
        n) np=$2 ;;
        t) threads=$2 ;;
        esac
        shift 2
    done
}

bench_setup() { # TMP_PREFIX
    bench="$build/bench/train/bench_train"
    omnimoe="$build/cli/omnimoe"
    for f in "$bench" "$omnimoe"; do
        [ -x "$f" ] || bench_die "$f not built (cmake --build $build)"
    done
    [ -r "$config" ] || bench_die "cannot read the config $config"
    tmp=$(mktemp -d "/tmp/$1-XXXXXX")
    trap 'rm -rf "$tmp"' EXIT INT TERM
    "$omnimoe" data demo --out "$tmp/demo.h5" >/dev/null
    mpi="mpirun --bind-to none"
    [ "$(id -u)" = 0 ] && mpi="$mpi --allow-run-as-root"
    return 0
}

field() { # FILE KEY: KEY's value on FILE's RESULT line
    sed -n "s/^RESULT .* $2=\([^ ]*\).*/\1/p" "$1"
}

load() { # the load average, 3 figures
    cut -d' ' -f1-3 /proc/loadavg
}
