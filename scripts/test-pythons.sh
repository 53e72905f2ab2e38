#!/usr/bin/env bash
# Installs, privately and idempotently, the interpreters and packages the tests need beyond
# pyenv's CPython 3.8-3.13 and Debian's /usr/bin/python3.11:
#
#   - CPython 3.14 and 3.15 from Debian sid (python3.X-minimal, -stdlib, -dev and the sid libc
#     they need), unpacked with dpkg -x, the executable patched (patchelf) to use sid's own
#     loader and libraries; plus, from sid's libpython3.X-dbg, the object files whose DWARF
#     carries the private structs (deque, array, BytesIO, OrderedDict ...) that the headers do
#     not, for scripts/gen_layouts.py (sid's release build has no debug information);
#   - numpy, from PyPI's wheels only (pinned per minor), in a virtualenv of every interpreter
#     the tests use: pyenv 3.8-3.13 (pip of the virtualenv), the static /usr/bin/python3.11
#     and sid's 3.14 and 3.15 (virtualenvs --without-pip: Debian's ensurepip is a separate
#     package; the wheel is installed into their site-packages by pyenv 3.12's pip, for the
#     interpreter's tags, compiled to bytecode and imported by the interpreter itself). Every
#     minor has a wheel on PyPI today, 3.15 included (numpy 2.5.5 ships cp315).
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
# numpy per minor, wheels only: numpy 1 (ndarray descr layout of 1.x) on 3.8 and 3.11, numpy 2
# elsewhere (2.0 on 3.9, the last release with a wheel for 3.8 / 3.9 / 3.10 there). The same pin
# serves pyenv's 3.11 and the static /usr/bin/python3.11.
NUMPY="3.8=1.24.4 3.9=2.0.2 3.10=2.2.6 3.11=1.26.4 3.12=2.4.6 3.13=2.3.5 3.14=2.5.5 3.15=2.5.5"
# where each interpreter's numpy lives: pyenv's in numpy/python3.X, these in numpy/NAME
DEBIAN_PYTHON=/usr/bin/python3.11
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

numpy_version() {
    local minor=$1 pair
    for pair in $NUMPY; do
        [ "${pair%%=*}" = "$minor" ] && { echo "${pair#*=}"; return; }
    done
    die "no numpy pinned for $minor in NUMPY"
}

# checks that numpy imports and computes under the interpreter of the virtualenv
check_numpy() {
    local venv=$1 version=$2
    "$venv/bin/python" -c "import sys, numpy
assert numpy.__version__ == sys.argv[1], numpy.__version__
assert int(numpy.arange(1000).sum()) == 499500" "$version" \
        || die "numpy $version does not import in $venv"
}

# numpy in a virtualenv of pyenv's 3.X, by the virtualenv's own pip
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
    "$base/bin/python$minor" -m venv "$venv" || die "no virtualenv of $base"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q --only-binary :all: "numpy==$version" \
        || die "pip install numpy==$version (wheel) for $minor failed"
    check_numpy "$venv" "$version"
    touch "$venv/.done-$version"
}

# The bytecode of numpy's modules for the virtualenv's own interpreter. pip compiles with the
# interpreter it runs under, so pyenv 3.12's pip (below) leaves only cpython-312 files: every
# `import numpy` of the static 3.11 or sid's 3.14/3.15 then compiled the ~90 numpy modules it
# loads from source (the tests run with PYTHONDONTWRITEBYTECODE=1, so nothing was ever cached):
# 5.3 times the allocations of an import from bytecode (1.22 M against 0.23 M, 243 MB against
# 75 MB, numpy 1.26 on the static 3.11), minutes of CPU under `--trace=all`. Run on every call
# (it only checks timestamps once done), so a cache made before this step gets the files too.
compile_numpy() {
    local venv=$1 python=$2 minor=$3
    "$python" -m compileall -q -j 0 "$venv/lib/python$minor/site-packages" >/dev/null \
        || die "compileall of numpy in $venv failed"
}

# numpy in a virtualenv (without pip) of an interpreter outside pyenv: the wheel for its tags,
# installed into its site-packages by pyenv 3.12's pip (pip 23 does not run under 3.15), then
# compiled by the interpreter itself (compile_numpy)
install_numpy_foreign() {
    local name=$1 python=$2 minor=$3 version=$4
    local venv="$CACHE/numpy/$name"
    if [ -f "$venv/.done-$version" ]; then
        compile_numpy "$venv" "$python" "$minor"
        return
    fi
    [ -x "$python" ] || die "no $python for numpy"
    local pip="$CACHE/numpy/python3.12/bin/pip"
    [ -x "$pip" ] || die "no $pip (pyenv 3.12's virtualenv) to install numpy for $name"
    log "numpy $version into a virtualenv of $python"
    rm -rf "$venv"
    "$python" -m venv --without-pip "$venv" || die "no virtualenv of $python"
    local site="$venv/lib/python$minor/site-packages" arch
    [ -d "$site" ] || die "no $site in the virtualenv of $python"
    arch=$(uname -m)
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$pip" install -q --only-binary :all: --no-deps \
        --target "$site" --python-version "$minor" --implementation cp --abi "cp${minor/./}" \
        --platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" \
        --platform "manylinux_2_27_$arch" --platform "manylinux_2_28_$arch" "numpy==$version" \
        || die "pip install numpy==$version (wheel for cp${minor/./}) for $name failed"
    compile_numpy "$venv" "$python" "$minor"
    check_numpy "$venv" "$version"
    touch "$venv/.done-$version"
}

for pair in $SID_PYTHONS; do install_sid "${pair%%=*}" "${pair#*=}"; done
for minor in 3.8 3.9 3.10 3.11 3.12 3.13; do install_numpy "$minor" "$(numpy_version "$minor")"; done
install_numpy_foreign debian-3.11 "$DEBIAN_PYTHON" 3.11 "$(numpy_version 3.11)"
for pair in $SID_PYTHONS; do
    minor=${pair%%=*}
    install_numpy_foreign "sid-$minor" "$CACHE/sid/python$minor/root/usr/bin/python$minor" \
        "$minor" "$(numpy_version "$minor")"
done
echo "$CACHE"
