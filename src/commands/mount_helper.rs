//! mount(8)'s calling convention, translated into `pbsfs mount` arguments: pbsfs run as
//! `/sbin/mount.fuse.pbsfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]` (mount(8)
//! and fstab, type `fuse.pbsfs`), or as `pbsfs SOURCE MOUNTPOINT -o OPTIONS` (how
//! mount.fuse3 runs the program of a `fuse.TYPE` file system).
//!
//! Each option of the comma list is one of: mount(8)'s own (accepted and ignored: they
//! mean something to mount(8), fstab or systemd, not to the file system); a long option
//! of `pbsfs mount` or a global one, with `_` for `-` (`ns=a/b`, `cache_size=64M`,
//! `pbs_store=NAME`: looked up in the clap grammar, so a new option works here at once);
//! or a FUSE mount option, passed on in `-o` (`ro`, `allow_other`, ...), where
//! `pbsfs mount` rejects an unknown one by name before anything is mounted. The source
//! shown in /proc/self/mountinfo is SOURCE as given (`fsname=`), as fstab has it.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::util::error::{Error, Result};

/// The name mount(8) runs for the type `fuse.pbsfs`.
pub const HELPER_NAME: &str = "mount.fuse.pbsfs";

/// Options that mean something to mount(8), fstab or systemd only.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
];

/// A helper call, translated.
#[derive(Debug, PartialEq, Eq)]
pub struct Translated {
    /// The `pbsfs ...` command line (argv[0] first) to parse with clap.
    pub args: Vec<OsString>,
    /// `-f` (fake): parse the options, mount nothing.
    pub fake: bool,
    /// `-v`: print the translated command line.
    pub verbose: bool,
}

/// Is this a mount-helper call? argv[0] named `mount.fuse.pbsfs`, or `pbsfs SOURCE
/// MOUNTPOINT ...` whose SOURCE is no subcommand and looks like a path (has a `/`, or
/// is a folder): a mistyped subcommand still gets clap's error.
/// The command line of this process as a `Cli`: translated first when mount(8) (as
/// /sbin/mount.fuse.pbsfs) or mount.fuse3 (as `pbsfs SOURCE MOUNTPOINT -o ...`) runs
/// it. A bad helper call, `--help` and friends exit here, as clap's parse does.
pub fn parse_command_line(argv: Vec<OsString>) -> crate::cli::Cli {
    use clap::Parser;
    if !is_helper_call(&argv) {
        return crate::cli::Cli::parse_from(argv);
    }
    let t = translate(&argv).unwrap_or_else(|e| {
        eprintln!("{HELPER_NAME}: error: {e}");
        std::process::exit(e.exit_code());
    });
    if t.verbose {
        let line: Vec<_> = t.args.iter().map(|a| a.to_string_lossy()).collect();
        eprintln!("{HELPER_NAME}: running: {}", line.join(" "));
    }
    let cli = crate::cli::Cli::parse_from(&t.args);
    if t.fake {
        std::process::exit(0);
    }
    cli
}

pub fn is_helper_call(argv: &[OsString]) -> bool {
    let Some(argv0) = argv.first() else {
        return false;
    };
    if Path::new(argv0).file_name() == Some(OsStr::new(HELPER_NAME)) {
        return true;
    }
    let Some(first) = argv.get(1).filter(|_| argv.len() >= 3) else {
        return false;
    };
    let s = first.to_string_lossy();
    if s.starts_with('-') || Cli::command().find_subcommand(&*s).is_some() || s == "help" {
        return false;
    }
    s.contains('/') || Path::new(first).is_dir()
}

/// Translate `SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]... [-t TYPE]` (argv[0] first).
pub fn translate(argv: &[OsString]) -> Result<Translated> {
    let mut positional: Vec<&OsString> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let (mut fake, mut verbose) = (false, false);
    let mut it = argv.iter().skip(1);
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        if !s.starts_with('-') || s == "-" {
            positional.push(arg);
            continue;
        }
        match &*s {
            "-o" | "-t" => {
                let v = it
                    .next()
                    .ok_or_else(|| Error::invalid(format!("argument {s}"), "needs a value"))?;
                if s == "-o" {
                    options.push(utf8(v, "-o")?.to_string());
                }
                // -t is fuse.pbsfs (or fuse): nothing to choose.
            }
            _ if s.starts_with("-o") => options.push(s[2..].to_string()),
            _ if s.len() > 1 && s[1..].chars().all(|c| "sfnv".contains(c)) => {
                // -s (sloppy) and -n (no mtab) change nothing here: options are checked
                // all the same, and there is no /etc/mtab to write.
                fake |= s.contains('f');
                verbose |= s.contains('v');
            }
            _ => {
                return Err(Error::invalid(
                    format!("argument '{s}'"),
                    format!(
                        "unknown to {HELPER_NAME} (usage: {HELPER_NAME} SOURCE MOUNTPOINT \
                         [-sfnv] [-o OPTIONS] [-t TYPE])"
                    ),
                ))
            }
        }
    }
    let [source, mountpoint] = positional[..] else {
        return Err(Error::invalid(
            "mount helper arguments",
            format!(
                "need SOURCE and MOUNTPOINT, got {} operand(s) (usage: {HELPER_NAME} \
                 SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS])",
                positional.len()
            ),
        ));
    };
    let long = long_options();
    let mut global = Vec::new();
    let mut extra: Vec<OsString> = Vec::new();
    let mut fuse = Vec::new();
    for opt in options.iter().flat_map(|o| o.split(',')).map(str::trim) {
        if opt.is_empty()
            || IGNORED.contains(&opt)
            || opt.starts_with("comment=")
            || opt.starts_with("x-")
        {
            continue;
        }
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let Some((name, takes_value, is_global)) = long.iter().find(|l| l.0 == key) else {
            fuse.push(opt.to_string());
            continue;
        };
        let flag = format!("--{}", name.replace('_', "-"));
        let to = if *is_global { &mut global } else { &mut extra };
        match (takes_value, value) {
            (true, Some(v)) => to.extend([flag.into(), v.into()]),
            (false, None) => to.push(flag.into()),
            (true, None) => {
                return Err(Error::invalid(
                    format!("mount option '{opt}'"),
                    format!("needs a value ({key}=...)"),
                ))
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    format!("mount option '{opt}'"),
                    format!("takes no value (write {key})"),
                ))
            }
        }
    }
    // The mount's source as fstab names it (as sshfs does), so `mount -a` finds the
    // line mounted and skips it instead of failing on a busy mountpoint. A comma
    // cannot be written in -o: such a source keeps the default (`pbsfs:STORE`).
    let named = fuse.iter().any(|o| o.starts_with("fsname="));
    if let (false, Some(src)) = (named, source.to_str().filter(|s| !s.contains(','))) {
        fuse.push(format!("fsname={src}"));
    }
    let mut args: Vec<OsString> = vec!["pbsfs".into()];
    args.extend(global);
    args.extend(["mount".into(), source.clone(), mountpoint.clone()]);
    if !fuse.is_empty() {
        args.extend(["-o".into(), fuse.join(",").into()]);
    }
    args.extend(extra);
    Ok(Translated {
        args,
        fake,
        verbose,
    })
}

fn utf8<'a>(v: &'a OsStr, what: &str) -> Result<&'a str> {
    v.to_str()
        .ok_or_else(|| Error::invalid(format!("argument {what}"), "not UTF-8"))
}

/// The long options a mount option may name, with `_` for `-`: `pbsfs mount`'s and the
/// global ones, as (name, takes a value, global). Left out: hidden ones, `-o` itself,
/// help, and `--foreground` (mount(8) waits for its helper to exit).
fn long_options() -> Vec<(String, bool, bool)> {
    let root = Cli::command();
    let mount = root
        .find_subcommand("mount")
        .expect("the grammar has a mount subcommand");
    let visible = |a: &&clap::Arg| {
        !a.is_hide_set()
            && !matches!(
                a.get_id().as_str(),
                "options" | "foreground" | "help" | "version"
            )
    };
    let entry = |a: &clap::Arg, global| {
        let name = a.get_long().map(|l| l.replace('-', "_"));
        name.map(|n| (n, a.get_action().takes_values(), global))
    };
    let globals = root.get_arguments().filter(|a| a.is_global_set());
    let own = mount.get_arguments().filter(visible);
    globals
        .filter(visible)
        .filter_map(|a| entry(a, true))
        .chain(own.filter_map(|a| entry(a, false)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn tr(v: &[&str]) -> Result<Translated> {
        translate(&args(v))
    }

    #[test]
    fn mount_8_convention_becomes_pbsfs_mount() {
        let t = tr(&[
            "/sbin/mount.fuse.pbsfs",
            "/srv/st",
            "/mnt/b",
            "-o",
            "rw,ro,allow_other,nofail,_netdev,noauto,x-systemd.automount,comment=x,ns=a/b,\
             cache_size=64M,pbs_store=main,nosuid,nodev,defaults,user,log_file=/var/log/b.log",
            "-t",
            "fuse.pbsfs",
            "-n",
        ])
        .unwrap();
        let want = args(&[
            "pbsfs",
            "--pbs-store",
            "main",
            "mount",
            "/srv/st",
            "/mnt/b",
            "-o",
            "rw,ro,allow_other,nosuid,nodev,fsname=/srv/st",
            "--ns",
            "a/b",
            "--cache-size",
            "64M",
            "--log-file",
            "/var/log/b.log",
        ]);
        assert_eq!(t.args, want);
        assert!(!t.fake && !t.verbose);
        let parsed = Cli::try_parse_from(&t.args).unwrap();
        assert!(matches!(parsed.command, crate::cli::Command::Mount(_)));
    }

    #[test]
    fn flags_clusters_and_bare_o_values() {
        let t = tr(&["pbsfs", "/s", "/m", "-fv", "-oro", "-s"]).unwrap();
        assert!(t.fake && t.verbose);
        assert_eq!(
            t.args,
            args(&["pbsfs", "mount", "/s", "/m", "-o", "ro,fsname=/s"])
        );
    }

    #[test]
    fn the_source_is_the_fsname_unless_given_or_unwritable() {
        let t = tr(&["m", "/s", "/m", "-o", "fsname=mine"]).unwrap();
        assert_eq!(
            t.args,
            args(&["pbsfs", "mount", "/s", "/m", "-o", "fsname=mine"])
        );
        let t = tr(&["m", "/a,b", "/m"]).unwrap();
        assert_eq!(t.args, args(&["pbsfs", "mount", "/a,b", "/m"]));
    }

    #[test]
    fn bad_calls_name_what_is_wrong() {
        let e = tr(&["mount.fuse.pbsfs", "/s"]).unwrap_err().to_string();
        assert!(e.contains("SOURCE and MOUNTPOINT"), "{e}");
        let e = tr(&["mount.fuse.pbsfs", "/s", "/m", "-x"]).unwrap_err();
        assert!(e.to_string().contains("'-x'"), "{e}");
        let e = tr(&["mount.fuse.pbsfs", "/s", "/m", "-o"]).unwrap_err();
        assert!(e.to_string().contains("-o"), "{e}");
        let e = tr(&["m", "/s", "/m", "-o", "ns"]).unwrap_err().to_string();
        assert!(e.contains("'ns'") && e.contains("needs a value"), "{e}");
        // `foreground` is no option here: mount(8) would wait for ever.
        let t = tr(&["m", "/s", "/m", "-o", "foreground"]).unwrap();
        assert_eq!(
            t.args,
            args(&["pbsfs", "mount", "/s", "/m", "-o", "foreground,fsname=/s"])
        );
        // Unknown options reach `pbsfs mount -o`, which names them (tests/it/system.rs).
    }

    #[test]
    fn helper_calls_are_told_from_subcommands() {
        assert!(is_helper_call(&args(&["/sbin/mount.fuse.pbsfs", "a", "b"])));
        assert!(is_helper_call(&args(&[
            "pbsfs", "/srv/st", "/mnt", "-o", "ro"
        ])));
        assert!(!is_helper_call(&args(&[
            "pbsfs", "mount", "/srv/st", "/mnt"
        ])));
        assert!(!is_helper_call(&args(&["pbsfs", "help", "mount", "x"])));
        assert!(!is_helper_call(&args(&[
            "pbsfs",
            "--pbs-store",
            "x",
            "mount"
        ])));
        assert!(
            !is_helper_call(&args(&["pbsfs", "mout", "st", "mnt"])),
            "typo"
        );
        assert!(!is_helper_call(&args(&["pbsfs", "/srv/st"])));
    }
}
