//! The `pbsfs` binary: parse the command line, dispatch, map errors to exit codes.

use clap::Parser;
use pbsfs::commands::mount_helper;

fn main() {
    pbsfs::util::sys::default_sigpipe();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Run by mount(8) as /sbin/mount.fuse.pbsfs (or by mount.fuse3 as `pbsfs SOURCE
    // MOUNTPOINT -o ...`): the same mount, in mount(8)'s calling convention.
    let cli = if mount_helper::is_helper_call(&argv) {
        let t = mount_helper::translate(&argv).unwrap_or_else(|e| {
            eprintln!("{}: error: {e}", mount_helper::HELPER_NAME);
            std::process::exit(e.exit_code());
        });
        if t.verbose {
            let line: Vec<_> = t.args.iter().map(|a| a.to_string_lossy()).collect();
            eprintln!("{}: running: {}", mount_helper::HELPER_NAME, line.join(" "));
        }
        let cli = pbsfs::cli::Cli::parse_from(&t.args);
        if t.fake {
            std::process::exit(0);
        }
        cli
    } else {
        pbsfs::cli::Cli::parse_from(argv)
    };
    let (serving, background) = match &cli.command {
        pbsfs::cli::Command::Mount(m) => (m.foreground, m.ready_fd.is_some()),
        _ => (false, false),
    };
    pbsfs::logging::init(if serving { "info" } else { "warn" }, background);
    match pbsfs::commands::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pbsfs: error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
