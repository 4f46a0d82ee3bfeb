#!/usr/bin/env bash
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
#
# The core's benchmarks in one run, which bench/README.md asks for before and after every
# change to the core: scale (10,000 heartbeating connections; vigil against the plain Beast
# floor and Node ws, about 5 minutes), then echo (vigil against raw Beast, `rounds` alternating
# rounds, once with the client sharing its payload and once copying it into every send).
# Run it on an idle machine; compare two builds by running it once for each.
#
#   bash bench/core.sh [BUILD_DIR] [OUT_DIR] [ROUNDS]    defaults: build, bench/results, 7
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
out=${2:-$here/results}
rounds=${3:-7}
mkdir -p "$out"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/python3 "$here/scale/run.py" --build "$build" --csv "$out/scale.csv" --png "$out/scale.png" \
    | tee "$out/scale.txt"
"$build/bench/vigil-bench-echo" --rounds "$rounds" --csv "$out/echo.csv" | tee "$out/echo.txt"
"$build/bench/vigil-bench-echo" --rounds "$rounds" --copy --csv "$out/echo-copy.csv" | tee "$out/echo-copy.txt"
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
    /usr/bin/python3 "$here/plot.py" "$out/echo.csv" "$out/echo.png"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
