//! The `pbsfs` binary: parse the command line, dispatch, map errors to exit codes.

fn main() {
    pbsfs::util::sys::default_sigpipe();
    // Also run by mount(8) as /sbin/mount.fuse.pbsfs, in its calling convention.
    let cli = pbsfs::commands::mount_helper::parse_command_line(std::env::args_os().collect());
    let (level, target) = pbsfs::logging::target_of(&cli.command);
    match pbsfs::logging::init(level, &target).and_then(|()| pbsfs::commands::run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pbsfs: error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
