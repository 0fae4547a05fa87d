#!/usr/bin/env bash
# Throughput and memory of pbsfs on this machine; results go in docs/benchmarks.md by hand.
# Not part of the test suite: speed is measured here, never asserted in tests.
#   scripts/bench.sh [SIZE_MIB]     (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends time; }
cargo build --release --quiet
P=$PWD/target/release/pbsfs
W=/var/tmp/pbsfs-bench
if mountpoint -q $W/mnt 2>/dev/null; then umount $W/mnt || umount -l $W/mnt; fi
rm -rf $W; mkdir -p $W/mnt
export PBSFS_PBS_CONFIG_DIR=$W/no-pbs

drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
# run LABEL BYTES CMD...: wall time, MiB/s and peak RSS of CMD
run() {
  local label=$1 bytes=$2; shift 2
  local t0 t1 rss
  t0=$(date +%s.%N)
  /usr/bin/time -f %M -o $W/rss "$@" > /dev/null 2>$W/err || { cat $W/err; exit 1; }
  t1=$(date +%s.%N)
  rss=$(tail -1 $W/rss)
  awk -v l="$label" -v b="$bytes" -v a="$t0" -v z="$t1" -v r="$rss" \
    'BEGIN { s = z - a; printf "%-42s %7.2f s %9.1f MiB/s %8.1f MiB peak RSS\n", l, s, b / 1048576 / s, r / 1024 }'
}

echo "== ${SIZE} MiB image: 1/4 zeros, 3/4 random (nproc=$(nproc))"
img=$W/disk.raw
truncate -s ${SIZE}M $img
dd if=/dev/urandom of=$img bs=1M count=$((SIZE * 3 / 4)) seek=$((SIZE / 4)) conv=notrunc status=none
bytes=$((SIZE * 1048576))
$P init $W/store > /dev/null

drop; run "backup (first, all chunks new)" $bytes $P backup $W/store vm/1 drive-scsi0.img:$img --backup-time 1700000000
run "backup (unchanged, all reused, validated)" $bytes $P backup $W/store vm/1 drive-scsi0.img:$img --backup-time 1700000100
drop; run "cat (cold page cache)" $bytes $P cat $W/store vm/1/latest drive-scsi0.img
run "cat (warm page cache)" $bytes $P cat $W/store vm/1/latest drive-scsi0.img
drop; run "verify (2 snapshots, chunks checked once)" $bytes $P verify $W/store
run "gc (nothing to remove)" $bytes $P gc $W/store

if $P mount $W/store $W/mnt 2>$W/mount.err; then
  snap=$(readlink $W/mnt/vm/1/latest)
  f=$W/mnt/vm/1/$snap/drive-scsi0.img
  drop; run "mount: cat (cold: chunks and page cache)" $bytes cat $f
  run "mount: cat (warm: kernel page cache)" $bytes cat $f
  pid=$(pgrep -f "pbsfs mount $W/store" | head -1 || true)
  [ -n "$pid" ] && echo "mount process peak RSS: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)"
  t0=$(date +%s.%N); ls -lR $W/mnt > /dev/null; t1=$(date +%s.%N)
  awk -v a="$t0" -v z="$t1" 'BEGIN { printf "mount: ls -lR of the store                 %7.3f s\n", z - a }'
  umount $W/mnt
else
  echo "mount unavailable: $(cat $W/mount.err)"
fi
rm -rf $W
