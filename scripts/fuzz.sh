#!/usr/bin/env bash
# Fuzz every decoder of untrusted bytes (cargo-fuzz + libFuzzer), each for a bounded time:
# no panic, no hang, no allocation beyond a bound. See docs/fuzzing.md.
#
#   scripts/fuzz.sh                 all targets, FUZZ_SECS (default 60) seconds each
#   scripts/fuzz.sh pxar upid       only these targets
#   FUZZ_SECS=600 scripts/fuzz.sh   longer runs
#
# Targets: blob fidx didx manifest catalog pxar pxar_split upid (fuzz/fuzz_targets/).
# Other settings: FUZZ_SANITIZER (address; `none` where ASan does not build, which also
# disables the malloc limit), FUZZ_TIMEOUT (seconds one input may take, default 10).
#
# Runs on the stable toolchain: cargo-fuzz needs nightly-only flags, which stable rustc
# accepts with RUSTC_BOOTSTRAP=1. One process, one thread per target (-jobs/-workers
# unset: libFuzzer's default is a single in-process run), so it shares a small machine.
# The corpus grows in fuzz/corpus/<target>/ across runs; seeds are rewritten each run in
# fuzz/seeds/<target>/ (tests/it/fuzz_seeds.rs, plus PBS's fixtures when present).
# A crash, hang (-timeout) or allocation over the bound (-rss_limit_mb, -malloc_limit_mb)
# stops that target, leaves the input in fuzz/artifacts/<target>/ and makes the script
# fail at the end; minimize it (`cargo fuzz tmin`), fix the decoder, and add the input
# under tests/fuzz-regressions/<target>/ (replayed by tests/it/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(blob fidx didx manifest catalog pxar pxar_split upid)
SECS=${FUZZ_SECS:-60}
SANITIZER=${FUZZ_SANITIZER:-address}
TIMEOUT=${FUZZ_TIMEOUT:-10}
# The largest input libFuzzer builds: an index needs its 4096-byte header, pxar streams
# and PBS's metadata streams (15 KiB) need room; small elsewhere to keep runs fast.
declare -A MAX_LEN=([blob]=4096 [fidx]=16384 [didx]=16384 [manifest]=4096 [catalog]=4096
  [pxar]=32768 [pxar_split]=32768 [upid]=512)
# The largest single allocation allowed (MB). A blob may decode to PBS's MAX_BLOB_SIZE
# (128 MiB), which Vec growth rounds up to 256 MiB: the bound that design sets. Every
# other decoder's caps (pxar: 8 MiB of attributes, 1 MiB prelude; indexes and catalogs:
# the input's own size) stay far below 64 MB for inputs of the sizes above.
declare -A MALLOC_MB=([blob]=320 [fidx]=64 [didx]=64 [manifest]=64 [catalog]=64
  [pxar]=64 [pxar_split]=64 [upid]=64)
RSS_MB=1024

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz.sh: no target '$t' (one of: ${ALL[*]})" >&2; exit 2; }
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

# Build first (release with debug assertions and overflow checks: an overflow that a
# release build would wrap silently is a finding too).
build=(-O -a --sanitizer "$SANITIZER")
(cd fuzz && cargo fuzz build "${build[@]}")

echo "fuzz.sh: writing seeds"
rm -rf fuzz/seeds
mkdir -p fuzz/seeds fuzz/logs
PBSFS_FUZZ_SEEDS="$PWD/fuzz/seeds" cargo test -q --test it fuzz_seeds::write_seeds -- --ignored >/dev/null

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/seeds/$t"
  log="fuzz/logs/$t.log"
  echo "fuzz.sh: $t for ${SECS}s (log: $log)"
  start=$(date +%s)
  rc=0
  (cd fuzz && cargo fuzz run "${build[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECS" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
    -malloc_limit_mb="${MALLOC_MB[$t]}" -max_len="${MAX_LEN[$t]}" \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1) >"$log" 2>&1 || rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ $rc -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc): $(grep -m1 -E '^==[0-9]+==|panicked|ERROR: libFuzzer' "$log" || true)"
    failed+=("$t")
  fi
  summary+=("$(printf '%-10s %5ss %10s execs  cov %5s  peak RSS %4s MB  corpus %5s  %s' \
    "$t" "$secs" "${execs:-?}" "${cov:-?}" "${rss:-?}" "$(ls "fuzz/corpus/$t" | wc -l)" "$result")")
done

echo
echo "fuzz.sh: summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: findings in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
