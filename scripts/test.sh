#!/usr/bin/env bash
# The whole check, as CI runs it: install what the tests need and is missing (apt, only
# what `command -v` lacks), then format check, clippy with warnings as errors, all tests.
# A missing tool is installed or the run fails loudly; no test is ever skipped for it.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package that provides it
declare -A NEED=(
  [fusermount3]=fuse3
  [mountpoint]=util-linux
  [cmp]=diffutils
  [vim]=vim
  [nano]=nano
  [emacs]=emacs-nox
  [tmux]=tmux
  [sed]=sed
  [python3]=python3
  [dd]=coreutils
  [kill]=procps
  [df]=coreutils
  [losetup]=mount
  [rsync]=rsync
  [tar]=tar
  [setfacl]=acl
  [getfattr]=attr
  [setcap]=libcap2-bin
  [strace]=strace
  [flock]=util-linux
  [setpriv]=util-linux
  [chattr]=e2fsprogs
  # tests/it/package.rs builds and inspects the .deb; system.rs mounts through mount(8).
  [dpkg-deb]=dpkg
  [gzip]=gzip
  [strip]=binutils
  [man]=man-db
  [mount]=mount
  [mount.fuse3]=fuse3
  # package.rs runs the zsh and fish completion scripts in those shells.
  [zsh]=zsh
  [fish]=fish
)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# Prune tests pin TZ to named zones: without tzdata glibc silently falls back to UTC.
[ -e /usr/share/zoneinfo/Europe/Vienna ] || missing+=(tzdata)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing missing packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  install() {
    $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
  }
  if ! install "${missing[@]}"; then
    echo "scripts/test.sh: apt-get failed, retrying once in 5 s" >&2
    sleep 5
    install "${missing[@]}" || {
      echo "scripts/test.sh: FATAL: could not install ${missing[*]}; the tests need them" >&2
      exit 1
    }
  fi
fi
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "scripts/test.sh: FATAL: $cmd still missing" >&2; exit 1; }
done
[ -e /dev/fuse ] || { echo "scripts/test.sh: FATAL: /dev/fuse is missing" >&2; exit 1; }

for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$comp"
  fi
done

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
log=$(mktemp)
# Tests whose input is absent (tests/it/common.rs `fixtures_dir`) return early, which
# cargo counts as passed; each writes one line here, counted below as skipped instead.
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
export PBSFS_SKIP_LOG="$skips"
set +e
cargo test 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line over every test binary. Ignored tests are skips, except the entry
# points of child processes that tests start (`#[ignore = "child process of ..."]`) and
# of tools (`#[ignore = "run by scripts/..."]`), which are not tests of their own.
children=$(grep -c '\.\.\. ignored, \(child process of\|run by scripts/\)' "$log" || true)
awk -v k="$(wc -l <"$skips")" -v c="$children" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1); if ($(i) ~ /^ignored/) s += $(i-1) } }
     END { printf "total: %d passed, %d failed, %d skipped (%d child-process and tool entry points not counted)\n", p - k, f, s + k - c, c }' "$log"
exit "$rc"
