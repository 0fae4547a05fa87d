#!/usr/bin/env bash
# Try pbsfs in one command: install what is missing, build in release mode, create a
# demo datastore (groups, snapshots, an image, config blobs, notes, one verified and one
# unverified snapshot), mount it, and print what to try.
#   scripts/demo.sh            # demo under /var/tmp/pbsfs-demo
#   DEMO_DIR=/srv/x scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO_DIR:-/var/tmp/pbsfs-demo}
STORE=$DEMO/store
MNT=$DEMO/mnt

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v mountpoint >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "demo: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "demo: cargo (Rust >= 1.89) is needed: https://rustup.rs" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "demo: /dev/fuse is missing (modprobe fuse)" >&2; exit 1; }

echo "demo: building (release)"
cargo build --release --quiet
PBSFS=$PWD/target/release/pbsfs

# Start over: unmount and remove an earlier demo.
if mountpoint -q "$MNT" 2>/dev/null; then "$PBSFS" umount "$MNT" || umount -l "$MNT"; fi
rm -rf "$DEMO"
mkdir -p "$DEMO/src" "$MNT"
"$PBSFS" init "$STORE" >/dev/null

# Sources: a 64 MiB disk (mostly zeros, like a fresh VM disk, with some data), configs.
disk=$DEMO/src/disk.raw
truncate -s 64M "$disk"
head -c 8M /dev/urandom | dd of="$disk" bs=1M seek=4 conv=notrunc status=none
printf 'boot: order=scsi0\ncores: 2\nmemory: 2048\nname: web\nscsi0: local:vm-100-disk-0,size=64M\n' > "$DEMO/src/qemu-server.conf"
printf 'arch: amd64\ncores: 1\nhostname: db\nmemory: 512\nrootfs: local:200/vm-200-disk-0.raw,size=8G\n' > "$DEMO/src/pct.conf"
printf '{"host":"files","paths":["/etc","/home"]}\n' > "$DEMO/src/host.json"

now=$(date +%s)
day=86400
"$PBSFS" backup "$STORE" vm/100 "drive-scsi0.img:$disk" "qemu-server.conf:$DEMO/src/qemu-server.conf" \
  --backup-time $((now - 2 * day)) --notes "Before the kernel upgrade
Installed: linux 6.1" >/dev/null
# Change 1 MiB of the disk: the next backup reuses every other chunk.
head -c 1M /dev/urandom | dd of="$disk" bs=1M seek=20 conv=notrunc status=none
"$PBSFS" backup "$STORE" vm/100 "drive-scsi0.img:$disk" "qemu-server.conf:$DEMO/src/qemu-server.conf" \
  --backup-time $((now - day)) --notes "After the kernel upgrade" >/dev/null
"$PBSFS" backup "$STORE" ct/200 "pct.conf:$DEMO/src/pct.conf" --backup-time $((now - day)) >/dev/null
"$PBSFS" backup "$STORE" host/files "host.json:$DEMO/src/host.json" --ns office --create-ns --backup-time $((now - day)) \
  --notes "Nightly file server backup" >/dev/null
"$PBSFS" notes "$STORE" vm/100 --set "Web server (production)
Owner: ops team" >/dev/null
# Verify the older snapshot only: one verified, one not.
first=$("$PBSFS" snapshots "$STORE" vm/100 | awk 'NR==2 {print $1}')
"$PBSFS" verify "$STORE" "$first" >/dev/null

"$PBSFS" mount "$STORE" "$MNT"
latest=$(readlink "$MNT/vm/100/latest")
cat <<EOT

pbsfs demo datastore: $STORE
mounted at:           $MNT

Try:
  ls -l $MNT/vm/100                         # snapshots, group notes, owner, latest
  ls -l $MNT/vm/100/latest/                 # notes, verify_state, manifest.json, the image
  cat $MNT/vm/100/latest/qemu-server.conf
  cmp $MNT/vm/100/latest/drive-scsi0.img $disk && echo identical
  cat $MNT/vm/100/*/verify_state            # one verified snapshot, one not
  vim $MNT/vm/100/$latest/notes             # edit notes; each save is one manifest transaction
  echo failed > $MNT/vm/100/$latest/verify_state
  $PBSFS notes $STORE vm/100/latest         # what the store now says
  ls $MNT/ns/office/host/files/latest/
  umount $MNT                               # or: $PBSFS umount $MNT
EOT
