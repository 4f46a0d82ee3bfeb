#!/usr/bin/env bash
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
#
# Builds tests/consumer as its own Meson project with vigil as a subproject, runs it, and
# checks that vigil as a subproject builds no tests, examples or benchmarks and installs
# nothing. Usage: run.sh VIGIL_SOURCE_ROOT
set -euo pipefail

src=$(cd "${1:?usage: run.sh VIGIL_SOURCE_ROOT}" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vigil-consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/project/subprojects"
cp "$src/tests/consumer/meson.build" "$src/tests/consumer/main.cpp" "$work/project/"
ln -s "$src" "$work/project/subprojects/vigil"

# --force-fallback-for: an installed vigil must not stand in for the one under test.
# buildtype plain: the library is compiled again here, and without optimisation that is cheaper.
meson setup "$work/build" "$work/project" \
    --force-fallback-for=vigil --buildtype=plain --werror >"$work/setup.log" ||
    { cat "$work/setup.log"; exit 1; }

# Only the library and the consumer: vigil's tests, examples and benchmarks are off by
# default in a subproject.
targets=$(meson introspect --targets "$work/build" |
    python3 -c 'import json, sys; print(" ".join(sorted(t["name"] for t in json.load(sys.stdin))))')
if [[ "$targets" != "consumer vigil" ]]; then
    echo "unexpected targets with vigil as a subproject: $targets" >&2
    exit 1
fi

ninja -C "$work/build" -j1

installed=$(meson introspect --installed "$work/build")
if [[ "$installed" != "{}" ]]; then
    echo "vigil as a subproject would install files: $installed" >&2
    exit 1
fi

output=$("$work/build/consumer")
echo "$output"
[[ "$output" == "ok" ]]
