#!/usr/bin/env bash
# Render the report page (made by report_page) in headless Chromium to a PNG, and check
# that the image is not blank: at least 2% of its pixels drawn and 2000 strongly coloured
# ones (lines and heatmap cells).
#   render.sh CHROMIUM PNG_INK PAGE WORKDIR
. "$(dirname "$0")/../lib/common.sh"
chromium=$1 ink=$2 page=$3 work=$4
command -v "$chromium" >/dev/null ||
    fail "$chromium not found: apt-get install chromium (scripts/deps --test)"
[[ -s $page ]] || fail "$page is missing (made by the report_page test)"
rm -rf "$work" && mkdir -p "$work" || fail "cannot make $work"
# A profile and home of its own: nothing from the user's browser, nothing left behind.
HOME=$work timeout 240 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --no-first-run --user-data-dir="$work/profile" --window-size=1400,3200 \
    --screenshot="$work/report.png" "file://$page" >"$work/chromium.log" 2>&1 ||
    fail "chromium failed: $(tail -5 "$work/chromium.log")"
[[ -s $work/report.png ]] || fail "no screenshot: $(tail -5 "$work/chromium.log")"
"$ink" "$work/report.png" 0.02 2000 || fail "the rendered page looks blank"
echo "ok: rendered $work/report.png"
