#!/usr/bin/env bash
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
#
# Uses vigil the three ways a user's build does, and runs what each builds (tests/consumer/main.cpp,
# which prints "ok"):
# 1. a Meson project with vigil as a subproject: vigil builds only its library, statically, and
#    installs nothing; the parent's installed program runs without LD_LIBRARY_PATH;
# 2. vigil installed alone (the library-only build) into a temporary prefix, whose vigil.pc and
#    CMake package name no path outside the prefix and nothing of nlohmann_json; a CMake project
#    (find_package, vigil::vigil) and a pkg-config build against it;
# 3. given vigil's own build directory with the examples built: its installed vigil-probe finds
#    the libvigil installed beside it, without LD_LIBRARY_PATH.
# Usage: run.sh VIGIL_SOURCE_ROOT [VIGIL_BUILD_ROOT]. VIGIL_CONSUMER_JOBS: compile jobs (2).
set -euo pipefail

src=$(cd "${1:?usage: run.sh VIGIL_SOURCE_ROOT [VIGIL_BUILD_ROOT]}" && pwd)
vigil_build=${2:-}
jobs=${VIGIL_CONSUMER_JOBS:-2}
for tool in cmake pkg-config readelf; do
    if ! command -v "$tool" >/dev/null; then
        echo "skipped: $tool is not installed" >&2
        exit 77
    fi
done
work=$(mktemp -d "${TMPDIR:-/tmp}/vigil-consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

# Runs a command with its output in a log, shown only if it fails.
quiet() {
    local log=$work/$1.log; shift
    "$@" >"$log" 2>&1 || { cat "$log"; echo "failed: $*" >&2; return 1; }
}

# Runs an installed program with no LD_LIBRARY_PATH; it must print "ok".
run_ok() {
    local output
    output=$(env -u LD_LIBRARY_PATH "$@")
    if [[ "$output" != "ok" ]]; then
        echo "$* printed: $output" >&2
        return 1
    fi
}

step() { echo "$1 ($(( $(date +%s) - started )) s)"; }

meson_parent() {
    local project=$work/project build=$work/parent-build prefix=$work/parent-prefix
    mkdir -p "$project/subprojects"
    cp "$src/tests/consumer/meson.build" "$src/tests/consumer/main.cpp" "$project/"
    ln -s "$src" "$project/subprojects/vigil"

    # --force-fallback-for: an installed vigil must not stand in for the one under test.
    # buildtype plain: the library is compiled again here, and without optimisation that is cheaper.
    quiet parent-setup meson setup "$build" "$project" --prefix="$prefix" \
        --force-fallback-for=vigil --buildtype=plain --werror

    # Only the library and the consumer: vigil's tests, examples and benchmarks are off by
    # default in a subproject.
    local targets
    targets=$(meson introspect --targets "$build" | python3 -c '
import json, sys
print(" ".join(sorted(t["name"] + ":" + t["type"] for t in json.load(sys.stdin))))')
    if [[ "$targets" != "consumer:executable vigil:static library" ]]; then
        echo "unexpected targets with vigil as a subproject: $targets" >&2
        return 1
    fi
    # The parent installs its program and nothing of vigil.
    local installed
    installed=$(meson introspect --installed "$build" | python3 -c '
import json, sys
print(" ".join(sorted(json.load(sys.stdin).values())))')
    if [[ "$installed" != "$prefix/bin/consumer" ]]; then
        echo "the parent with vigil as a subproject would install: $installed" >&2
        return 1
    fi

    quiet parent-build ninja -C "$build" -j "$jobs"
    quiet parent-install meson install -C "$build" --no-rebuild
    if readelf -d "$prefix/bin/consumer" | grep -q 'NEEDED.*libvigil'; then
        echo "the parent's program needs libvigil.so although vigil is linked statically" >&2
        return 1
    fi
    run_ok "$prefix/bin/consumer"

    # -Dvigil:subproject_library=shared: a shared libvigil, installed beside the parent's program
    # (configured only: the build is the same library, shared).
    quiet parent-shared-setup meson setup "$work/parent-shared" "$project" --prefix="$prefix" \
        --force-fallback-for=vigil -Dvigil:subproject_library=shared
    if ! meson introspect --installed "$work/parent-shared" | grep -q 'libvigil\.so'; then
        echo "-Dvigil:subproject_library=shared does not install libvigil.so" >&2
        return 1
    fi
}

# vigil.pc and the CMake package name no path outside the prefix, and no nlohmann_json.
check_package_files() {
    local prefix=$1 file bad=0
    while IFS= read -r file; do
        if grep -qi nlohmann "$file"; then
            echo "$file names nlohmann_json:" >&2
            grep -i nlohmann "$file" >&2
            bad=1
        fi
        # Absolute paths: a "/" at the start of a word or after =, ", ( or ;.
        local outside
        outside=$(grep -v '^#' "$file" | grep -oE '(^|[ ="(;])/[^ ";)]*' |
            sed -E 's/^[ ="(;]//' | grep -v "^$prefix\(/\|\$\)" || true)
        if [[ -n "$outside" ]]; then
            echo "$file names paths outside the prefix: $outside" >&2
            bad=1
        fi
    done < <(find "$prefix" -name 'vigil.pc' -o -name 'vigil*.cmake')
    return "$bad"
}

installed_library() {
    local build=$work/vigil-build prefix=$work/prefix
    # The library-only build the README gives.
    quiet vigil-setup meson setup "$build" "$src" --prefix="$prefix" --buildtype=plain --werror \
        -Dtests=disabled -Dexamples=disabled -Dbench=disabled
    quiet vigil-build ninja -C "$build" -j "$jobs"
    quiet vigil-install meson install -C "$build" --no-rebuild

    local pc cmake_config
    pc=$(find "$prefix" -name vigil.pc)
    cmake_config=$(find "$prefix" -path '*/cmake/vigil/vigilConfig.cmake')
    if [[ -z "$pc" || -z "$cmake_config" || ! -e "${cmake_config%Config.cmake}ConfigVersion.cmake" ]]; then
        echo "not installed: vigil.pc (${pc:-missing}), vigilConfig.cmake and vigilConfigVersion.cmake (${cmake_config:-missing})" >&2
        return 1
    fi
    check_package_files "$prefix"

    step "pkg-config consumer"
    local flags libdir
    export PKG_CONFIG_PATH=$(dirname "$pc")
    flags=$(pkg-config --cflags --libs vigil)
    libdir=$(pkg-config --variable=libdir vigil)
    # Static linking needs nothing more than vigil's own .pc and OpenSSL's.
    quiet pkg-config-static pkg-config --static --libs vigil
    # shellcheck disable=SC2086 # the flags are words
    quiet pkg-config-build g++ -std=c++20 -Wall -Wextra -Werror "$src/tests/consumer/main.cpp" \
        -o "$work/pkg-config-consumer" $flags -Wl,-rpath,"$libdir"
    run_ok "$work/pkg-config-consumer"

    step "CMake consumer"
    quiet cmake-setup cmake -S "$src/tests/consumer/cmake" -B "$work/cmake-build" \
        -DCMAKE_PREFIX_PATH="$prefix"
    quiet cmake-build cmake --build "$work/cmake-build" -j "$jobs"
    run_ok "$work/cmake-build/consumer"
}

# vigil's own installed vigil-probe runs from any prefix: an rpath relative to its place.
installed_probe() {
    local dest=$work/dest probe
    quiet probe-install meson install -C "$vigil_build" --no-rebuild --destdir "$dest"
    probe=$(find "$dest" -path '*/bin/vigil-probe')
    if ! readelf -d "$probe" | grep -q 'NEEDED.*libvigil'; then
        echo "vigil-probe installed: libvigil is linked in statically"
        quiet probe-help env -u LD_LIBRARY_PATH "$probe" --help
        return
    fi
    local lib
    lib=$(env -u LD_LIBRARY_PATH ldd "$probe" | awk '/libvigil/ {print $3}')
    if [[ "$lib" != "$dest"/* ]]; then
        echo "the installed vigil-probe finds libvigil at '$lib', not in its own prefix" >&2
        return 1
    fi
    quiet probe-help env -u LD_LIBRARY_PATH "$probe" --help
}

step "Meson parent with vigil as a subproject"
meson_parent
step "vigil installed alone"
installed_library
if [[ -n "$vigil_build" && -x "$vigil_build/examples/vigil-probe" ]]; then
    step "vigil-probe installed"
    installed_probe
else
    echo "vigil-probe installed: not checked (no examples in ${vigil_build:-an unnamed build})"
fi
step "done"
echo ok
