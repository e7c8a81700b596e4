#!/usr/bin/env bash
# The engine's layers (docs/ARCHITECTURE.md, "Inside core/") and the one direction of their includes: a file may
# include the internal headers of its own part and of the parts below it, never of a part above it. Argument:
# SOURCE_DIR. Exits 1 and names each include against the direction.
set -euo pipefail
src=$1
# the parts, lowest first; a part's rank is its line number. cpu/ and cuda/ (the backends) sit just above core/:
# they implement its table and know nothing of layers, networks or training.
ranks='core
cpu cuda
io
data
nn
compress quant
train
insight serve'
rank_of_dir() { # the rank of a folder name (core/<part> or a top-level backend), or nothing
  awk -v d="$1" '{for (i = 1; i <= NF; i++) if ($i == d) print NR}' <<<"$ranks"
}
part_of() { # the part of a path relative to src: core/<part>/..., core/<file>, cpu/..., cuda/...
  case $1 in
    core/lite/*) echo lite ;;
    core/*/*) d=${1#core/}; echo "${d%%/*}" ;;
    core/*) echo core ;;
    cpu/* | cuda/*) echo "${1%%/*}" ;;
  esac
}
# cuda/nccl.* is data-parallel training's GPU collective: it lives with its backend and ranks with train/
exception() { case $1 in cuda/nccl.*) echo train ;; esac; }
bad=0 checked=0
cd "$src"
while IFS= read -r f; do
  part=$(exception "$f"); [ -n "$part" ] || part=$(part_of "$f")
  [ "$part" = lite ] && continue # cnn-lite stands alone: it includes only itself and the public headers
  r=$(rank_of_dir "$part")
  [ -n "$r" ] || { echo "layers: $f is in no known part ($part): add it to tests/check_layers.sh and the document"; bad=1; continue; }
  while IFS= read -r inc; do
    ip=$(part_of "$inc")
    [ "$ip" = lite ] && continue
    ir=$(rank_of_dir "$ip")
    [ -n "$ir" ] || { echo "layers: $f includes $inc, in no known part"; bad=1; continue; }
    checked=$((checked + 1))
    if [ "$ir" -gt "$r" ]; then
      echo "layers: $f ($part) includes $inc ($ip), a part above it"
      bad=1
    fi
  done < <(grep -ho '^#include "core/[^"]*"' "$f" | sed 's/^#include "//; s/"$//')
done < <(find core cpu cuda -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)
[ "$checked" -gt 0 ] || { echo "layers: no include checked under $src"; exit 1; }
[ "$bad" = 0 ] || exit 1
echo "layers: $checked includes checked, all in the direction of the layers"
