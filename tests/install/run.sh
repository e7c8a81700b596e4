#!/usr/bin/env bash
# Installs the build into a temporary prefix, runs the installed program without LD_LIBRARY_PATH, then builds and
# runs a consumer with find_package(cnn) and with pkg-config. Arguments: BUILD_DIR SOURCE_DIR.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
model="$tmp/prefix/share/cnn/models/seed_cnn.cnn"
test -f "$tmp/prefix/include/cnn/cnn.h"
test -f "$model"

# the installed program needs no LD_LIBRARY_PATH: its RUNPATH is relative to it, so the prefix may move too
libname=$(basename "$(dirname "$(ls -d "$tmp"/prefix/lib*/pkgconfig | head -n 1)")")
if command -v readelf >/dev/null; then
  readelf -d "$tmp/prefix/bin/cnn" >"$tmp/dynamic"
  grep -E '\((RUNPATH|RPATH)\)' "$tmp/dynamic" | grep -F "\$ORIGIN/../$libname" >/dev/null ||
    { echo "install: bin/cnn has no RUNPATH \$ORIGIN/../$libname"; grep PATH "$tmp/dynamic"; exit 1; }
  readelf -d "$tmp/prefix/$libname/libcnn.so" >"$tmp/dynamic"
  grep -E '\((RUNPATH|RPATH)\)' "$tmp/dynamic" | grep -F '$ORIGIN' >/dev/null ||
    { echo "install: libcnn.so has no RUNPATH \$ORIGIN"; grep PATH "$tmp/dynamic"; exit 1; }
fi
mv "$tmp/prefix" "$tmp/moved"
env -u LD_LIBRARY_PATH "$tmp/moved/bin/cnn" --version >"$tmp/version"
grep '^cnn ' "$tmp/version" >/dev/null
mv "$tmp/moved" "$tmp/prefix"

cmake -S "$src/tests/install" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer/consumer" "$model"

libdir=$(ls -d "$tmp"/prefix/lib*/pkgconfig | head -n 1)
export PKG_CONFIG_PATH="$libdir"
cc -o "$tmp/consumer-pc" "$src/tests/install/main.c" $(pkg-config --cflags --libs cnn)
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer-pc" "$model"
echo "install: find_package(cnn) and pkg-config both work"
