#!/usr/bin/env bash
# The long fuzzing run (issue 13): every libFuzzer harness for SECONDS CPU seconds (default 600, 10 CPU-minutes)
# on a copy of its seed corpus, then a log of libFuzzer's final statistics per harness (executions, executions
# per second, coverage, corpus, peak RSS) and the findings, for bench/RESULTS.md.
#
#   bench/fuzz_long.sh [SECONDS] [OUT_DIR] [JOBS]
#
# OUT_DIR (default build-fuzz/fuzz-long) receives the grown corpora, libFuzzer's output per harness, any crash
# inputs, and fuzz_long.log. Each harness is one thread, stopped once its CPU time reaches SECONDS (run.sh with
# FUZZ_BUDGET=cpu), however long that takes on a shared machine; JOBS harnesses run at a time (default: the number
# of cores), so 10 harnesses of 600 s take about 50 minutes on 2 idle cores. Builds build-fuzz with clang
# (CNN_FUZZ=ON) first. Exit status 1 when a harness found something.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
out=${2:-build-fuzz/fuzz-long}
jobs=${3:-$(nproc)}

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCNN_FUZZ=ON -DCNN_BUILD_TESTS=OFF -DCNN_CUDA=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target cnn_fuzzers >/dev/null

mkdir -p "$out"
log="$out/fuzz_long.log"
{
  echo "# cnn.c long fuzzing run: $seconds s per harness, $jobs at a time"
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- core cpu include tests/fuzz 2>/dev/null || echo ' (with local changes)')"
  echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "clang:   $(clang --version | head -1)"
  echo "flags:   -max_total_time=$seconds -max_len=65536 -rss_limit_mb=2048 -timeout=10, -fsanitize=fuzzer,address,undefined"
  echo
} >"$log"

status=0
FUZZ_BUDGET=cpu tests/fuzz/run.sh build-fuzz "$seconds" "$out" "$jobs" | tee -a "$log" || status=1

{
  echo
  echo "libFuzzer's final statistics:"
  for f in "$out"/*.log; do
    [ "$f" = "$log" ] && continue
    name=$(basename "$f" .log)
    printf '%s:' "$name"
    sed -n 's/^stat::\([a-z_]*\): *\([0-9]*\)/ \1=\2/p' "$f" | tr -d '\n'
    echo
  done
  short=$(awk -v s="$seconds" '$1 != "" && $13 + 0 < s - 1 { printf " %s (%s s)", $1, $13 }' "$out/summary.txt")
  if [ -n "$short" ]; then
    echo "short of $seconds CPU seconds (stopped by the wall limit, or by a finding):$short"
  else
    echo "every harness ran $seconds CPU seconds"
  fi
  if [ "$status" -eq 0 ]; then echo "findings: none"; else echo "findings: see above (artifacts in $out/artifacts)"; fi
} | tee -a "$log"
echo "log: $log"
exit $status
