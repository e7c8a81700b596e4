#!/usr/bin/env bash
# libcnn.so exports exactly the public API: every function declared with CNN_API in include/cnn/*.h, and nothing
# else (the library is built with hidden visibility). Arguments: LIBCNN_SO SOURCE_DIR.
set -euo pipefail
lib=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the declared: the identifier before the first '(' of each CNN_API declaration
grep -h '^CNN_API ' "$src"/include/cnn/*.h | sed 's/(.*//' | awk '{print $NF}' | tr -d '*' | sort -u >"$tmp/declared"
# the exported: defined dynamic symbols, less the linker's own markers
nm -D --defined-only "$lib" | awk '{print $NF}' | grep -vE '^(_init|_fini|_edata|_end|__bss_start)$' | sort -u >"$tmp/exported"
test -s "$tmp/declared" || { echo "exports: no CNN_API declaration found under $src/include/cnn"; exit 1; }
extra=$(comm -13 "$tmp/declared" "$tmp/exported")
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
if [ -n "$extra" ]; then
  echo "exports: $lib exports $(echo "$extra" | wc -l) symbol(s) that are not the public API:"; echo "$extra" | head -40
fi
if [ -n "$missing" ]; then
  echo "exports: $(echo "$missing" | wc -l) public function(s) declared in include/cnn are not exported:"; echo "$missing" | head -40
fi
[ -z "$extra" ] && [ -z "$missing" ] || exit 1
echo "exports: $(wc -l <"$tmp/exported") symbols, exactly the CNN_API functions of include/cnn"
