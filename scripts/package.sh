#!/usr/bin/env bash
# Build the Debian package of pbsfs: stage the installed tree, then `dpkg-deb --build`
# (dpkg's own tool: nothing to install, unlike cargo-deb, which takes minutes to build
# on 2 cores). The man pages and completions come from the binary itself (its hidden
# `generate-man` / `generate-completions` subcommands), so they match its --help.
#
#   scripts/package.sh                      # release build -> target/debian/pbsfs_VERSION_ARCH.deb
#   scripts/package.sh --binary target/debug/pbsfs --out DIR   # a built binary, no build
#   --compress xz|gzip|zstd|none   dpkg-deb's compressor (default xz; tests take gzip)
#
# What goes where:
#   /usr/bin/pbsfs
#   /sbin/mount.fuse.pbsfs -> /usr/bin/pbsfs          mount(8) / fstab type fuse.pbsfs
#   /usr/share/man/man1/pbsfs.1.gz, pbsfs-SUBCOMMAND.1.gz
#   /usr/share/bash-completion/completions/pbsfs
#   /usr/share/zsh/vendor-completions/_pbsfs
#   /usr/share/fish/vendor_completions.d/pbsfs.fish
#   /usr/share/doc/pbsfs/README.md.gz, copyright
# Prints the path of the package it wrote.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: scripts/package.sh [--binary PATH] [--out DIR] [--compress TYPE]" >&2
  exit 2
}

BINARY=""
OUT=target/debian
COMPRESS=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || usage; BINARY=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
    --compress) [ $# -ge 2 ] || usage; COMPRESS=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scripts/package.sh: unknown argument '$1'" >&2; usage ;;
  esac
done

for cmd in dpkg-deb dpkg gzip; do
  command -v "$cmd" >/dev/null 2>&1 || {
    echo "scripts/package.sh: $cmd is needed (apt-get install dpkg gzip)" >&2
    exit 1
  }
done

if [ -z "$BINARY" ]; then
  echo "scripts/package.sh: building (release)" >&2
  cargo build --release --locked --quiet
  BINARY=target/release/pbsfs
fi
[ -x "$BINARY" ] || { echo "scripts/package.sh: $BINARY is not an executable" >&2; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
ARCH=$(dpkg --print-architecture)
[ -n "$VERSION" ] || { echo "scripts/package.sh: no version in Cargo.toml" >&2; exit 1; }

# stage ROOT BINARY: the installed tree of the package under ROOT.
stage() {
  local root=$1 bin=$2
  install -D -m 0755 "$bin" "$root/usr/bin/pbsfs"
  # As dh_strip would: debug info is most of a binary (90 % of a debug build's).
  if command -v strip >/dev/null 2>&1; then
    strip --strip-unneeded "$root/usr/bin/pbsfs"
  fi
  install -d "$root/sbin"
  # Absolute: it crosses top-level folders (Debian policy 10.5).
  ln -s /usr/bin/pbsfs "$root/sbin/mount.fuse.pbsfs"

  local man=$root/usr/share/man/man1
  install -d "$man"
  "$bin" generate-man "$man" >/dev/null
  # -n: no name or time in the header, so the same input gives the same package.
  gzip -9n "$man"/*.1

  install -d "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d"
  "$bin" generate-completions bash >"$root/usr/share/bash-completion/completions/pbsfs"
  "$bin" generate-completions zsh >"$root/usr/share/zsh/vendor-completions/_pbsfs"
  "$bin" generate-completions fish >"$root/usr/share/fish/vendor_completions.d/pbsfs.fish"

  local doc=$root/usr/share/doc/pbsfs
  install -d "$doc"
  gzip -9n <README.md >"$doc/README.md.gz"
  cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pbsfs

Files: *
License: MIT OR Apache-2.0
EOF

  install -d "$root/DEBIAN"
  local size
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat >"$root/DEBIAN/control" <<EOF
Package: pbsfs
Version: $VERSION
Architecture: $ARCH
Maintainer: pbsfs developers <pbsfs@localhost>
Installed-Size: $size
Depends: libc6, fuse3
Section: utils
Priority: optional
Homepage: https://pbs.proxmox.com
Description: Proxmox Backup Server datastore as a filesystem
 pbsfs mounts a Proxmox Backup Server datastore (FUSE): groups and snapshots
 as folders, images and configs as files checked chunk by chunk, pxar archives
 as trees, notes and verify_state editable. Its CLI creates, backs up, lists,
 verifies, prunes, garbage-collects and restores. Also installs the mount(8)
 helper mount.fuse.pbsfs for fstab entries of type fuse.pbsfs.
EOF
}

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
chmod 0755 "$STAGE"
stage "$STAGE" "$BINARY"
mkdir -p "$OUT"
DEB=$OUT/pbsfs_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Z"$COMPRESS" --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
