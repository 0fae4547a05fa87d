#!/usr/bin/env bash
# Throughput and memory of pbsfs on this machine; results go in docs/benchmarks.md by hand.
# Not part of the test suite: speed is measured here, never asserted in tests.
#   scripts/bench.sh [SIZE_MIB]     (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
# Tools compared with: installed when missing (borg mounts through pyfuse3).
need=()
command -v /usr/bin/time >/dev/null || need+=(time)
command -v bc >/dev/null || need+=(bc)
command -v borg >/dev/null || need+=(borgbackup)
python3 -c 'import pyfuse3' 2>/dev/null || need+=(python3-pyfuse3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
ROUNDS=${ROUNDS:-5}
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

# ---- A tree of 10,000 small files: pbsfs (pxar) against borg, interleaved rounds. ----
# Each round times both tools on the same operations; the table reports the median of
# the per-round ratios (borg time / pbsfs time: above 1 means pbsfs is faster), with
# min and max, because the machine is shared and noisy.
tree=$W/tree
python3 - "$tree" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
for d in range(100):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
    for f in range(100):
        n = rnd.randrange(0, 4097)
        with open(f"{root}/d{d:03}/f{f:03}", "wb") as out:
            out.write(bytes(rnd.getrandbits(8) for _ in range(n // 2)) + b"a" * (n - n // 2))
PY
tree_bytes=$(du -sb $tree | cut -f1)
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null 2>>$W/err || { cat $W/err; exit 1; }; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
results=$W/tree-results
: > $results
for r in $(seq 1 $ROUNDS); do
  rm -rf $W/ps $W/borg $W/out-p $W/out-b; mkdir -p $W/mnt-b
  $P init $W/ps > /dev/null
  borg init -e none $W/borg > /dev/null 2>&1
  drop; pb=$(secs $P backup $W/ps host/tree root.pxar:$tree --backup-time 1700000000)
  drop; bb=$(secs borg create $W/borg::t $tree)
  $P mount $W/ps $W/mnt
  drop; pl=$(secs ls -lR $W/mnt/host/tree/latest/root.pxar)
  pf=$(secs find $W/mnt/host/tree/latest/root.pxar -name 'f05*')
  pid=$(pgrep -f "pbsfs mount $W/ps" | head -1 || true)
  prss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  umount $W/mnt
  borg mount $W/borg::t $W/mnt-b
  drop; bl=$(secs ls -lR $W/mnt-b)
  bf=$(secs find $W/mnt-b -name 'f05*')
  umount $W/mnt-b
  drop; pr=$(secs $P restore $W/ps host/tree/latest root.pxar $W/out-p)
  mkdir -p $W/out-b; drop
  br=$( cd $W/out-b && secs borg extract $W/borg::t )
  echo "$pb $bb $pl $bl $pf $bf $pr $br $prss" >> $results
done
echo "== tree of 10,000 files ($((tree_bytes / 1024)) KiB), $ROUNDS rounds: median (min-max) of borg time / pbsfs time"
python3 - $results <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
names = ["backup (first run)", "ls -lR through the mount", "find through the mount", "restore / extract"]
for i, name in enumerate(names):
    ratios = [r[2 * i + 1] / r[2 * i] for r in rows]
    ptimes = [r[2 * i] for r in rows]
    print(f"{name:28} ratio {statistics.median(ratios):5.2f}x ({min(ratios):.2f}-{max(ratios):.2f}), pbsfs median {statistics.median(ptimes):.3f} s")
print(f"pbsfs mount peak RSS after ls -lR + find: {statistics.median(r[8] for r in rows) / 1024:.1f} MiB (median)")
PY
rm -rf $W
