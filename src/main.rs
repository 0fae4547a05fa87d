//! The `pbsfs` binary: parse the command line, dispatch, map errors to exit codes.

use clap::Parser;

fn main() {
    pbsfs::sys::default_sigpipe();
    let cli = pbsfs::cli::Cli::parse();
    let foreground_mount = matches!(&cli.command, pbsfs::cli::Command::Mount(m) if m.foreground);
    let default_level = if foreground_mount { "info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();
    match pbsfs::commands::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pbsfs: error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
