#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds and runs a consumer with find_package(cnn) and with
# pkg-config. Arguments: BUILD_DIR SOURCE_DIR.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
model="$tmp/prefix/share/cnn/models/seed_cnn.cnn"
test -f "$tmp/prefix/include/cnn/cnn.h"
test -f "$model"

cmake -S "$src/tests/install" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer/consumer" "$model"

libdir=$(ls -d "$tmp"/prefix/lib*/pkgconfig | head -n 1)
export PKG_CONFIG_PATH="$libdir"
cc -o "$tmp/consumer-pc" "$src/tests/install/main.c" $(pkg-config --cflags --libs cnn)
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/consumer-pc" "$model"
echo "install: find_package(cnn) and pkg-config both work"
