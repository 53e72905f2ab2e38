#!/usr/bin/env bash
# Installs, privately and idempotently, the interpreters and packages the tests need beyond
# pyenv's CPython 3.8-3.13 and Debian's /usr/bin/python3.11:
#
#   - CPython 3.14 and 3.15 from Debian sid (python3.X-minimal, -stdlib, -dev and the sid libc
#     they need), unpacked with dpkg -x, the executable patched (patchelf) to use sid's own
#     loader and libraries; plus, from sid's libpython3.X-dbg, the object files whose DWARF
#     carries the private structs (deque, array, BytesIO, OrderedDict ...) that the headers do
#     not, for scripts/gen_layouts.py (sid's release build has no debug information);
#   - numpy in a virtualenv of pyenv 3.11 (numpy 1.x) and of pyenv 3.12 (numpy 2.x).
#
# Nothing is installed system-wide. Everything lives under $MEMLENS_TEST_CACHE (default
# ~/.cache/memlens-test), where crates/memlens/tests/it/support.rs and gen_layouts.py look.
# A second run finds everything in place and returns at once. Concurrent runs serialise on a
# lock. Needs patchelf (scripts/test.sh installs it) and apt-get/dpkg.
#
# usage: scripts/test-pythons.sh        (prints the cache folder on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${MEMLENS_TEST_CACHE:-$HOME/.cache/memlens-test}
# Exact sid versions: the generated layout tables come from their headers. When sid drops
# one, update it here, re-run this script and scripts/gen_layouts.py, and commit the table.
SID_PYTHONS="3.14=3.14.10-1 3.15=3.15.2-1"
# numpy per pyenv minor: numpy 1 (ndarray descr layout of 1.x) and numpy 2.
NUMPY="3.11=1.26.4 3.12=2.4.6"
# Bump when the way an interpreter is unpacked changes: installs of an older recipe are redone.
RECIPE=2
LIBS="libc6 libgcc-s1 libssl3t64 libexpat1 zlib1g libzstd1 libffi8 libbz2-1.0 liblzma5
      libuuid1 libsqlite3-0 libncursesw6 libtinfo6 libreadline8t64"
# objects of libpython3.Xd.a whose DWARF gen_layouts.py reads
DWARF_OBJECTS_14="_collectionsmodule.o arraymodule.o bytesio.o odictobject.o codeobject.o
      listobject.o"
DWARF_OBJECTS_15="$DWARF_OBJECTS_14 lazyimportobject.o"

log() { printf 'test-pythons: %s\n' "$*" >&2; }
die() { printf 'test-pythons: FAILED: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

APT_DIR="$CACHE/apt"
apt_opts() {
    echo -o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache" \
        -o Dir::State::Status=/dev/null -o "APT::Architectures=amd64,arm64" \
        -o Acquire::Languages=none
}
apt_ready=""
apt_update() {
    [ -n "$apt_ready" ] && return
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    printf 'deb http://deb.debian.org/debian sid main\ndeb-src http://deb.debian.org/debian sid main\n' \
        > "$APT_DIR/sources.list"
    log "apt-get update (Debian sid, private lists in $APT_DIR)"
    # shellcheck disable=SC2046
    apt-get $(apt_opts) update -qq >/dev/null || die "apt-get update of Debian sid failed"
    apt_ready=1
}

install_sid() {
    local minor=$1 version=$2
    local dest="$CACHE/sid/python$minor"
    local objects
    objects=$(eval echo "\$DWARF_OBJECTS_${minor#3.}")
    if [ -f "$dest/.done-$version" ] && [ -f "$dest/.recipe-$RECIPE" ]; then
        return
    fi
    command -v patchelf >/dev/null || die "patchelf is needed (apt-get install patchelf)"
    apt_update
    local work
    work=$(mktemp -d "$CACHE/.work.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    log "downloading CPython $version from Debian sid"
    local pkgs="python$minor-minimal=$version libpython$minor-minimal=$version
                libpython$minor-stdlib=$version libpython$minor-dev=$version
                libpython$minor-dev:arm64=$version"
    # shellcheck disable=SC2046,SC2086
    (cd "$work" && apt-get $(apt_opts) download -qq $pkgs $LIBS >/dev/null) \
        || die "sid has no python$minor $version any more: update SID_PYTHONS in $0 and regenerate the layouts"
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
    rm -f "$work"/*.deb
    # the debug build's static library: its objects carry DWARF; only the few that define
    # private structs are kept
    # shellcheck disable=SC2046
    (cd "$work" && apt-get $(apt_opts) download -qq "libpython$minor-dbg=$version" >/dev/null) \
        || die "no libpython$minor-dbg $version in sid"
    mkdir -p "$work/dbg" "$work/dwarf"
    dpkg-deb -x "$work"/libpython"$minor"-dbg_*.deb "$work/dbg"
    local archive
    archive=$(ls "$work"/dbg/usr/lib/python"$minor"/config-"$minor"d-*/libpython"$minor"d.a)
    # shellcheck disable=SC2086
    (cd "$work/dwarf" && ar x "$archive" $objects) \
        || die "libpython${minor}d.a lacks one of: $objects"
    rm -rf "$work/dbg" "$work"/*.deb
    local root="$work/root"
    local exe="$root/usr/bin/python$minor"
    [ -x "$exe" ] || die "no usr/bin/python$minor in the sid packages"
    # sid's loader and libraries, never the host's (sid's libc is newer); DT_RPATH (not
    # RUNPATH) so that libraries loaded by extension modules are found there too
    # (sid is merged-/usr: the libraries are all in usr/lib)
    patchelf --set-interpreter "$dest/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
        --force-rpath --set-rpath "$dest/root/usr/lib/x86_64-linux-gnu" "$exe"
    # the build's own paths (sysconfig's DESTSHARED, LIBDEST, INCLUDEPY ...) name where the
    # packages would have installed it: point them at this copy
    sed -i -e "s#/usr/lib/python$minor#$dest/root/usr/lib/python$minor#g" \
        -e "s#/usr/include/python$minor#$dest/root/usr/include/python$minor#g" \
        "$root"/usr/lib/python"$minor"/_sysconfigdata_*.py
    rm -rf "$dest"
    mkdir -p "$(dirname "$dest")"
    mkdir "$dest"
    mv "$work/root" "$dest/root"
    mv "$work/dwarf" "$dest/dwarf"
    "$dest/root/usr/bin/python$minor" -c 'import sys, json, threading; print(sys.version)' >/dev/null \
        || die "the unpacked python$minor does not run"
    touch "$dest/.done-$version" "$dest/.recipe-$RECIPE"
    rm -rf "$work"
    trap - EXIT
    log "CPython $version in $dest"
}

install_numpy() {
    local minor=$1 version=$2
    local venv="$CACHE/numpy/python$minor"
    if [ -f "$venv/.done-$version" ]; then
        return
    fi
    local base
    base=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$minor".* 2>/dev/null | grep -E "/$minor\.[0-9]+$" | sort -V | tail -1)
    [ -n "$base" ] || die "no pyenv $minor for numpy"
    log "numpy $version into a virtualenv of $base"
    rm -rf "$venv"
    "$base/bin/python$minor" -m venv "$venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q "numpy==$version" \
        || die "pip install numpy==$version failed"
    touch "$venv/.done-$version"
}

for pair in $SID_PYTHONS; do install_sid "${pair%%=*}" "${pair#*=}"; done
for pair in $NUMPY; do install_numpy "${pair%%=*}" "${pair#*=}"; done
echo "$CACHE"
