#!/usr/bin/env bash
# Throughput and memory of pbsfs on this machine; results go in docs/benchmarks.md by hand.
# Not part of the test suite: speed is measured here, never asserted in tests.
#   scripts/bench.sh [SIZE_MIB]     (default 1024)
# Env: ROUNDS (default 5) rounds of the interleaved comparisons; SECTIONS (default
# "image tree second") picks the sections; PBSFS_MODE (default metadata) is the
# --change-detection-mode of the "second backup" section.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
# Tools compared with: installed when missing (borg mounts through pyfuse3).
need=()
command -v /usr/bin/time >/dev/null || need+=(time)
command -v bc >/dev/null || need+=(bc)
command -v borg >/dev/null || need+=(borgbackup)
command -v restic >/dev/null || need+=(restic)
python3 -c 'import pyfuse3' 2>/dev/null || need+=(python3-pyfuse3)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
ROUNDS=${ROUNDS:-5}
SECTIONS=" ${SECTIONS:-image tree second} "
section() { [[ $SECTIONS == *" $1 "* ]]; }
cargo build --release --quiet
P=$PWD/target/release/pbsfs
W=/var/tmp/pbsfs-bench
# Unmount what a run (this one, or one that was killed) left mounted, then remove $W.
cleanup() {
  local m
  for m in $W/mnt $W/mnt-b; do
    if mountpoint -q $m 2>/dev/null; then umount $m 2>/dev/null || umount -l $m || true; fi
  done
  rm -rf $W
}
cleanup; mkdir -p $W/mnt
trap cleanup EXIT
trap 'exit 130' INT TERM
export PBSFS_PBS_CONFIG_DIR=$W/no-pbs

# make_tree DIR: 10,000 files of 0-4 KiB (half random, half "a") in DIR/d000..d099 (seed 42).
make_tree() {
  python3 - "$1" <<'PY'
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
}
# make_dataset DIR SIZE_MIB: the data set of the "second backup" section, deterministic:
# DIR/big.bin, SIZE_MIB MiB semi-compressible, of 64 KiB blocks (32 KiB random bytes,
# 16 KiB hex text, 16 KiB zeros; seed 7), and make_tree's 10,000 files in DIR/d000..d099.
# big.bin is written first: borg never caches the file with the newest ctime of a run
# (a race guard), so it re-reads only DIR/d099/f099 (< 4 KiB) in an unchanged second run.
make_dataset() {
  mkdir -p "$1"
  python3 - "$1/big.bin" "$2" <<'PY'
import random, sys
rnd = random.Random(7)
with open(sys.argv[1], "wb") as out:
    for _ in range(int(sys.argv[2]) * 16):
        out.write(rnd.randbytes(32768) + rnd.randbytes(8192).hex().encode() + bytes(16384))
PY
  make_tree "$1"
}

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
# secs_to OUT CMD...: seconds CMD took, its stdout in OUT; on failure its stderr, and exit.
secs_to() {
  local out=$1 t0 t1; shift
  t0=$(date +%s.%N)
  "$@" > "$out" 2>>$W/err || { echo "FAILED: $*" >&2; cat $W/err >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
secs() { secs_to /dev/null "$@"; }
# quiet CMD...: CMD's output hidden, shown (and exit) when it fails.
quiet() { "$@" > $W/quiet.out 2>&1 || { echo "FAILED: $*" >&2; cat $W/quiet.out >&2; exit 1; }; }
# borg and restic keep their caches (files caches included) and config under $W.
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR=$W/borg-home RESTIC_CACHE_DIR=$W/restic-cache RESTIC_PASSWORD=bench

if section image; then

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
fi

if section tree; then

# ---- A tree of 10,000 small files: pbsfs (pxar) against borg, interleaved rounds. ----
# Each round times both tools on the same operations; the table reports the median of
# the per-round ratios (borg time / pbsfs time: above 1 means pbsfs is faster), with
# min and max, because the machine is shared and noisy.
tree=$W/tree
make_tree $tree
tree_bytes=$(du -sb $tree | cut -f1)
results=$W/tree-results
: > $results
for r in $(seq 1 $ROUNDS); do
  rm -rf $W/ps $W/borg $W/out-p $W/out-b; mkdir -p $W/mnt-b
  quiet $P init $W/ps
  quiet borg init -e none $W/borg
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
rm -rf $tree $W/ps $W/borg $W/out-p $W/out-b
fi

# ---- Second backup of an unchanged data set: pbsfs against restic and borg. ----
# The data set (make_dataset): one folder with a SIZE_MIB MiB semi-compressible file and
# the 10,000 small files in 100 folders. Each round starts every tool from an empty
# repository and a fresh cache, backs the folder up once (untimed for the ratio, but
# recorded), then times the second backup of the unchanged folder. The tools run
# interleaved within a round (pbsfs, borg, restic), page cache dropped before each run.
# - pbsfs: --change-detection-mode metadata (split pxar archive): the second run compares
#   each file's metadata with the previous snapshot's and references the unchanged files'
#   payloads in that snapshot's payload index, without reading or chunking them.
# - borg (create) and restic (backup): skip unchanged files through their files caches
#   (borg: ctime, size, inode; restic: mtime, ctime, size, inode against the parent
#   snapshot), both caches under $W and populated by the first run, as a user's would be.
# Reported: median (min-max) of per-round ratios restic time / pbsfs time and borg time /
# pbsfs time (above 1: pbsfs faster; the target is 3x for both) and each tool's median.
if section second; then
PBSFS_MODE=${PBSFS_MODE:-metadata}
data=$W/data
make_dataset $data $SIZE
data_bytes=$(du -sb $data | cut -f1)
results=$W/second-results
: > $results
for r in $(seq 1 $ROUNDS); do
  rm -rf $W/ps $W/borg $W/restic $W/borg-home $W/restic-cache
  quiet $P init $W/ps
  # Backup times are real ones (after the files' times), T2 > T1, as a user's runs would be.
  t1=$(date +%s)
  drop; p1=$(secs $P backup $W/ps host/data data.pxar:$data --change-detection-mode $PBSFS_MODE --backup-time $t1)
  t2=$(date +%s); [ $t2 -gt $t1 ] || t2=$((t1 + 1))
  drop; p2=$(secs_to $W/pbsfs-second.out $P backup $W/ps host/data data.pxar:$data --change-detection-mode $PBSFS_MODE --backup-time $t2)
  quiet borg init -e none $W/borg
  drop; b1=$(secs borg create $W/borg::a $data)
  drop; b2=$(secs borg create $W/borg::b $data)
  quiet restic init -r $W/restic
  drop; r1=$(secs restic -r $W/restic backup $data)
  drop; r2=$(secs_to $W/restic-second.out restic -r $W/restic backup $data)
  echo "$p1 $p2 $b1 $b2 $r1 $r2" >> $results
  if [ $r = 1 ]; then
    echo "== second backup of an unchanged folder ($((data_bytes / 1048576)) MiB: ${SIZE} MiB file + 10,000 files), pbsfs --change-detection-mode $PBSFS_MODE"
    echo "restic $(restic version | cut -d' ' -f2), $(borg --version)"
    sed 's/^/pbsfs second run: /' $W/pbsfs-second.out
    grep -E '^(Files|Dirs|Added)' $W/restic-second.out | sed 's/^/restic second run: /' || true
  fi
done
echo "$ROUNDS rounds: median (min-max) of other tool's second-run time / pbsfs's second-run time"
python3 - $results <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs)
for name, i in [("restic", 5), ("borg", 3)]:
    ratios = [r[i] / r[1] for r in rows]
    print(f"{name + ' / pbsfs':16} ratio {med(ratios):5.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
for name, i in [("pbsfs", 0), ("borg", 2), ("restic", 4)]:
    print(f"{name:7} second run median {med([r[i + 1] for r in rows]):7.3f} s "
          f"({min(r[i + 1] for r in rows):.3f}-{max(r[i + 1] for r in rows):.3f}), "
          f"first run median {med([r[i] for r in rows]):7.3f} s")
PY
fi
