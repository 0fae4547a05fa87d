//! The `pbsfs` binary: parse the command line, dispatch, map errors to exit codes.

use clap::Parser;

fn main() {
    pbsfs::util::sys::default_sigpipe();
    let cli = pbsfs::cli::Cli::parse();
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
