#!/usr/bin/env bash
# Build and run tests/consumer/consumer.c the way a user would, against flashattn as installed:
#   run.sh pkg-config|cmake BUILD_DIR WORK_DIR VERSION   from `meson install --destdir` of BUILD_DIR
#   run.sh meson SOURCE_DIR WORK_DIR VERSION              as a meson subproject of a fresh project
# Prints TAP (the consumer's own, or a skip when cmake is missing).
set -euo pipefail
mode=$1 tree=$2 work=$3 version=$4
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work"

install_tree() {
  meson install -C "$tree" --destdir "$work/root" --no-rebuild --quiet >&2
  prefix=$(meson introspect "$tree" --buildoptions | python3 -c '
import json, sys
opts = {o["name"]: o["value"] for o in json.load(sys.stdin)}
print(opts["prefix"], opts["libdir"])')
  read -r prefix libdir <<<"$prefix"
  libpath=$work/root$prefix/$libdir
}

case $mode in
  pkg-config)
    install_tree
    # The destdir stands in for the filesystem root: the sysroot rewrites the .pc file's -I and -L paths.
    export PKG_CONFIG_PATH=$libpath/pkgconfig PKG_CONFIG_SYSROOT_DIR=$work/root
    cc -std=c11 -o "$work/consumer" "$here/consumer.c" $(pkg-config --cflags --libs flashattn) -lm
    LD_LIBRARY_PATH=$libpath exec "$work/consumer" "$version" ;;
  cmake)
    if ! command -v cmake >/dev/null; then echo "1..0 # SKIP cmake not installed"; exit 0; fi
    install_tree
    cmake -S "$here" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/root$prefix" -DCMAKE_BUILD_TYPE=Release >&2
    cmake --build "$work/build" >&2
    # CMake puts the imported library's directory in the build tree's rpath: no LD_LIBRARY_PATH.
    exec "$work/build/consumer" "$version" ;;
  meson)
    mkdir -p "$work/project/subprojects"
    cp "$here/consumer.c" "$here/meson.build" "$work/project/"
    ln -s "$tree" "$work/project/subprojects/flashattn"
    meson setup "$work/build" "$work/project" --force-fallback-for=flashattn >&2
    ninja -C "$work/build" >&2
    exec "$work/build/consumer" "$version" ;;
  *) echo "usage: run.sh pkg-config|cmake|meson TREE WORK VERSION" >&2; exit 2 ;;
esac
