#!/usr/bin/env bash
# A machine without Criterion, made by hiding criterion.pc from pkg-config (a search path
# holding every other .pc file): scripts/demo configures and the omnimoe program is a build
# target; a configure with tests on stops with a message naming the package and the switch.
. "$(dirname "$0")/../lib/common.sh"
make_tmp
mkdir "$tmp/pc"
IFS=: read -r -a dirs <<<"$(pkg-config --variable pc_path pkg-config)"
for d in "${dirs[@]}"; do
  for f in "$d"/*.pc; do
    [[ -e "$f" ]] || continue
    name=$(basename "$f")
    [[ "$name" == criterion.pc || -e "$tmp/pc/$name" ]] || ln -s "$f" "$tmp/pc/$name"
  done
done
export PKG_CONFIG_LIBDIR="$tmp/pc" PKG_CONFIG_PATH=

# The trick works: pkg-config sees the other libraries but not Criterion.
pkg-config --exists hdf5-openmpi && count_pass || count_fail "hdf5-openmpi hidden too"
pkg-config --exists criterion && count_fail "criterion still found" || count_pass

# scripts/demo's configure step, then the program's target exists and no test target does.
if OMNI_BUILD_DIR="$tmp/demo" OMNI_DEMO_CONFIGURE_ONLY=1 "$src/scripts/demo" > "$tmp/demo.log" 2>&1
then
  count_pass
  grep -q "tests are off" "$tmp/demo.log" && count_pass || count_fail "no message that tests are off"
  targets=$(cmake --build "$tmp/demo" --target help)
  grep -qw omnimoe <<<"$targets" && count_pass || count_fail "no omnimoe target"
  grep -qw test_base <<<"$targets" && count_fail "test targets configured" || count_pass
else
  count_fail "scripts/demo could not configure without Criterion:"; tail -20 "$tmp/demo.log"
fi

# With tests on, configure stops and says what to install or switch off.
if cmake -S "$src" -B "$tmp/tests" -DBUILD_TESTING=ON > "$tmp/tests.log" 2>&1; then
  count_fail "configure with tests on succeeded without Criterion"
else
  grep -q "libcriterion-dev" "$tmp/tests.log" && count_pass || count_fail "message does not name libcriterion-dev"
  grep -q "BUILD_TESTING=OFF" "$tmp/tests.log" && count_pass || count_fail "message does not name -DBUILD_TESTING=OFF"
fi
echo "no_criterion: $passes passed, $fails failed"
[[ $fails -eq 0 ]]
