#!/usr/bin/env bash
# Runs every fuzz harness of a CNN_FUZZ build for a while on a copy of its seed corpus (README, "Fuzzing").
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS OUT_DIR [JOBS]
#
# BUILD_DIR holds tests/fuzz/fuzz_<name> (cmake --build BUILD_DIR --target cnn_fuzzers); each harness runs SECONDS
# seconds of wall time (of CPU time with FUZZ_BUDGET=cpu; one process, one thread) on OUT_DIR/corpus/<name>, a
# copy of tests/fuzz/corpus/<name> and of the kept crash inputs of tests/fuzz/regressions/<name>, which the fuzzer
# grows: the repository is never written. JOBS harnesses run at a time (default 1). Per harness:
# OUT_DIR/<name>.log, libFuzzer's output, and in OUT_DIR/artifacts/<name>/ the input of any crash, leak, timeout or
# out-of-memory. OUT_DIR/summary.txt gets one line per harness: executions, executions per second, coverage (cov:
# edges, ft: features), corpus size, CPU seconds, findings and exit status. Exit status 1 when any harness found
# something or failed to run.
set -uo pipefail
if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "usage: $0 BUILD_DIR SECONDS OUT_DIR [JOBS]" >&2
  exit 2
fi
build=$(cd "$1" && pwd) || exit 2
seconds=$2
mkdir -p "$3" || exit 2
out=$(cd "$3" && pwd)
jobs=${4:-1}
# FUZZ_BUDGET=cpu: SECONDS of CPU time per harness instead of wall time (bench/fuzz_long.sh; a shared machine)
budget=${FUZZ_BUDGET:-wall}
# FUZZ_ONLY="name ...": only these harnesses (e.g. again after a fix), default all
only=${FUZZ_ONLY:-}
src=$(cd "$(dirname "$0")" && pwd)
# the harnesses' temporary files (the file under test; checkpoints are written back with an fsync) go to memory
# when it can take them: an fsync to disk every run would make the checkpoint harness wait on the disk
tmp_base=/dev/shm
[ -d "$tmp_base" ] && [ -w "$tmp_base" ] || tmp_base="$out"
tmp=$(mktemp -d "$tmp_base/cnn-fuzz-run.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

harnesses=()
for c in "$src"/fuzz_*.c; do
  name=$(basename "$c" .c)
  name=${name#fuzz_}
  [ "$name" = util ] && continue
  [ -n "$only" ] && [[ " $only " != *" $name "* ]] && continue
  if [ ! -x "$build/tests/fuzz/fuzz_$name" ]; then
    echo "fuzz: $build/tests/fuzz/fuzz_$name is missing: build it with cmake --build $1 --target cnn_fuzzers" >&2
    exit 1
  fi
  harnesses+=("$name")
done

# the dictionary of a harness: dict/<name>.dict, else the JSON one for the formats with a JSON header
dict_of() {
  case "$1" in
    model_file | model_zlib | checkpoint | serve_config | lite_model) echo "$src/dict/json.dict" ;;
    *) [ -f "$src/dict/$1.dict" ] && echo "$src/dict/$1.dict" ;;
  esac
}

run_one() {
  local name=$1 corpus="$out/corpus/$1" art="$out/artifacts/$1/" log="$out/$1.log" dict
  rm -rf "$corpus" "$art" && mkdir -p "$corpus" "$art" "$tmp/$name"
  cp "$src/corpus/$name"/* "$corpus"/
  [ -d "$src/regressions/$name" ] && cp "$src/regressions/$name"/* "$corpus"/
  dict=$(dict_of "$name")
  # wall budget: libFuzzer stops itself; CPU budget: stopped with SIGINT (it prints its final statistics and
  # exits with status 72) once its CPU time reaches SECONDS, with a wall limit of 20 times that
  local limit=$seconds
  [ "$budget" = cpu ] && limit=$((seconds * 20))
  TMPDIR="$tmp/$name" OMP_NUM_THREADS=1 "$build/tests/fuzz/fuzz_$name" \
    -max_total_time="$limit" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$art" ${dict:+-dict="$dict"} "$corpus" >"$log" 2>&1 &
  local pid=$! tck stat
  tck=$(getconf CLK_TCK)
  if [ "$budget" = cpu ]; then
    while read -r -a stat 2>/dev/null <"/proc/$pid/stat"; do
      [ $((stat[13] + stat[14])) -ge $((seconds * tck)) ] && { kill -INT "$pid"; break; }
      sleep 1
    done
  fi
  wait "$pid"
  echo "rc $?" >>"$log"
  # an interrupted fuzzer exits without unregistering its OpenMP runtime, whose file would stay in /dev/shm
  rm -f "/dev/shm/__KMP_REGISTERED_LIB_${pid}_"*
  # the CPU time of this subshell's children, the fuzzer: user and system seconds, the second line of `times` (run
  # in this shell, not in a pipe's subshell, which has no children)
  times >"$out/$name.times"
  sed -n '2s/\([0-9]*\)m\([0-9.]*\)s \([0-9]*\)m\([0-9.]*\)s/\1 \2 \3 \4/p' "$out/$name.times" |
    awk '{ print $1 * 60 + $2, $3 * 60 + $4 }' >"$out/$name.cpu"
  rm -f "$out/$name.times"
}

summarize() {
  local name=$1 log="$out/$1.log" execs rate done_line cov ft corp cpu rc findings
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  done_line=$(grep -a -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[bKM]*b*\).*/\1/p' <<<"$done_line")
  cpu=$(awk '{printf "%.0f", $1 + $2}' "$out/$name.cpu" 2>/dev/null)
  rc=$(sed -n 's/^rc //p' "$log" | tail -1)
  findings=$(find "$out/artifacts/$name" -type f | wc -l)
  printf '%-12s execs %10s  exec/s %7s  cov %5s  ft %6s  corpus %-12s  cpu_s %5s  findings %s  rc %s\n' \
    "$name" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${cpu:-?}" "$findings" "${rc:-?}"
  [ "$findings" -eq 0 ] && { [ "${rc:-1}" -eq 0 ] || { [ "$budget" = cpu ] && [ "${rc:-1}" -eq 72 ]; }; }
}

echo "fuzz: ${#harnesses[@]} harnesses, $seconds s ($budget time) each, $jobs at a time, in $out"
running=0
for name in "${harnesses[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  run_one "$name" &
  running=$((running + 1))
done
wait

status=0
: >"$out/summary.txt"
for name in "${harnesses[@]}"; do
  line=$(summarize "$name") || status=1
  echo "$line" | tee -a "$out/summary.txt"
done
for name in "${harnesses[@]}"; do
  for f in "$out/artifacts/$name"/*; do
    [ -f "$f" ] || continue
    echo "fuzz: $name found $(basename "$f"); the stack is in $out/$name.log; reproduce with:" >&2
    echo "  $build/tests/fuzz/fuzz_$name $f" >&2
  done
done
exit $status
