//! The long help of `pbsfs mount`: the mount's layout, editing rules, errnos and the
//! fstab / mount(8) use. One text, shown by `pbsfs mount --help` and rendered into the
//! `pbsfs-mount(1)` man page (`commands::generate`), so the two never disagree.
//!
//! Format of `MOUNT_SECTIONS`: (title, body). Paragraphs of a body are separated by a
//! blank line; a paragraph whose lines start with two spaces is preformatted (kept
//! line by line in the man page), any other is filled text.

/// `pbsfs mount`'s description (`long_about`).
pub const MOUNT_ABOUT: &str = "\
Mount the datastore as a filesystem.

Groups and snapshots are folders; images and config blobs are files whose every byte \
comes from a chunk whose SHA-256 was checked; pxar archives are folders; `notes` and \
`verify_state` are editable files, each save one locked transaction on the snapshot's \
manifest. Without --foreground the command returns once the mount answers and the \
mount serves in the background, logging to syslog when a log daemon listens on \
/dev/log, else to a file it names when it starts (--log-file chooses one); `umount MOUNTPOINT`, \
`fusermount3 -u` or `pbsfs umount` end it.";

/// The sections after the options, in order.
pub const MOUNT_SECTIONS: &[(&str, &str)] = &[
    (
        "LAYOUT",
        "  MOUNTPOINT/
    vm/100/                      a backup group (mtime: its newest snapshot)
      notes                      group notes, editable
      owner                      read-only
      latest -> 2024-05-02T08:11:33Z
      2024-05-02T08:11:33Z/      a finished snapshot (mtime: the backup time)
        notes                    the snapshot's notes, editable, byte-exact
        verify_state             the last verify result as JSON, editable
        manifest.json            the decoded manifest, read-only
        drive-scsi0.img          a disk image, read-only
        qemu-server.conf         a config blob, read-only
        root.pxar/               a pxar archive as a folder, read-only
        catalog.pcat1            the catalog, read-only
    ns/office/...                namespaces, nested as on disk

With --ns NS (or -o ns=NS) the namespace NS is the root. Running backups (snapshots \
without a manifest) are not shown; snapshots made or forgotten meanwhile show on the \
next listing.",
    ),
    (
        "EDITING",
        "\
Only `notes` (group and snapshot) and `verify_state` can be written. Any editor or tool \
works (vim, nano, emacs, sed -i, cp, tee, echo >, echo >>, mv within the folder): each \
save becomes one locked transaction on the manifest, committed when the tool closes the \
file. Truncating notes clears them; `rm notes` and renaming notes away are refused, so \
`mv` of a file from another file system (which must remove notes first) fails: use \
`cp FILE notes` or `cat FILE > notes`.

Modes, owners and times are fixed: chmod and chown to the values `ls -l` shows succeed; \
any other value and any touch fail with EPERM (logged with the reason). `cp -p` onto \
notes saves the content but reports that the times could not be kept.

`df` on the mount shows the scratch space for editors' temporary files (16 MiB and 64 \
files per mount, none available on a read-only mount), not the datastore's disk: saves \
go to the datastore and take none of it.

`verify_state` takes `ok`, `failed`, JSON {\"state\": \"ok\"|\"failed\", \"upid\": \"UPID:...\"} \
or nothing (which removes it). A bad edit changes nothing. Editors' swap and backup files \
live in memory only (at most 64 files and 16 MiB per mount) and vanish at unmount.

Content that can never become valid is refused at write(2); a problem found only when \
the whole content is known is reported by close(2) and logged (a shell's `echo x > file` \
does not show it).",
    ),
    (
        "ERRORS",
        "  EIO      a corrupt or missing chunk, bad index, blob or manifest (only the reads
           that touch it fail; logged once with the chunk's digest and snapshot)
  ENOENT   not found
  ENOKEY   an encrypted archive or blob (no key)
  EAGAIN   the snapshot is locked (a backup, prune or forget runs); try again
  EINVAL   a verify_state that can never be valid
  EILSEQ   notes that are not UTF-8
  EFBIG    notes or verify_state over 1 MiB
  EPERM    rename or unlink of notes / verify_state; chmod, chown or touch to
           another value than the file has
  EROFS    any write on a read-only mount (-o ro, or a store that may not be
           written: read-only medium, maintenance mode)
  EACCES   a write to a read-only file of a writable mount
  ENOSPC   the scratch space of editors' temporary files is full",
    ),
    (
        "FSTAB AND MOUNT(8)",
        "\
The package installs /sbin/mount.fuse.pbsfs (a link to pbsfs), so mount(8) and fstab \
mount the type fuse.pbsfs:

  mount -t fuse.pbsfs /srv/store /mnt/backups -o ro,allow_other
  # /etc/fstab:
  /srv/store  /mnt/backups  fuse.pbsfs  ro,allow_other,nofail  0  0

Options: every -o option above, plus ns=NS, cache_size=SIZE, pbs_store=NAME (the \
long options of this command, with _ for -); mount(8)'s own (defaults, auto, noauto, \
user, users, nofail, _netdev, comment=..., x-*) are accepted and ignored. An unknown \
option is an error naming it, and nothing is mounted. Without the helper, mount.fuse3 \
runs `pbsfs SOURCE MOUNTPOINT -o OPTIONS`, which pbsfs accepts too (SOURCE must then \
contain a /).",
    ),
    (
        "SIGNALS",
        "\
SIGINT and SIGTERM unmount; SIGUSR1 logs the statistics (requests, bytes served, chunk \
cache hits and misses, cache bytes in use of its size), which are also logged at \
unmount.",
    ),
];

/// The sections as plain text, for `pbsfs mount --help`.
pub fn mount_after_help() -> String {
    let mut out = String::new();
    for (title, body) in MOUNT_SECTIONS {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(title);
        out.push_str(":\n");
        out.push_str(body);
        out.push('\n');
    }
    out
}

/// Escape text for roff: backslashes, and a `.` or `'` at a line start (a request).
fn roff_escape(line: &str) -> String {
    let s = line.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The sections as roff (`.SH` each; filled paragraphs, preformatted blocks in `.nf`).
pub fn mount_sections_roff() -> String {
    let mut out = String::new();
    for (title, body) in MOUNT_SECTIONS {
        out.push_str(&format!(".SH \"{title}\"\n"));
        for para in body.split("\n\n") {
            let pre = para.lines().all(|l| l.starts_with("  "));
            out.push_str(if pre { ".PP\n.nf\n" } else { ".PP\n" });
            for line in para.lines() {
                out.push_str(&roff_escape(line));
                out.push('\n');
            }
            if pre {
                out.push_str(".fi\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_and_man_page_carry_every_section() {
        let help = mount_after_help();
        let roff = mount_sections_roff();
        for (title, _) in MOUNT_SECTIONS {
            assert!(help.contains(&format!("{title}:\n")), "{title}");
            assert!(roff.contains(&format!(".SH \"{title}\"")), "{title}");
        }
        assert!(roff.contains(".nf\n  EIO "), "errnos preformatted: {roff}");
        assert!(!roff.lines().any(|l| l.starts_with('.')
            && !l.starts_with(".SH")
            && !matches!(l, ".PP" | ".nf" | ".fi")));
    }

    #[test]
    fn roff_requests_and_backslashes_are_escaped() {
        assert_eq!(roff_escape(".lock"), "\\&.lock");
        assert_eq!(roff_escape("a\\b"), "a\\eb");
        assert_eq!(roff_escape("-o ro"), "\\-o ro");
    }
}
