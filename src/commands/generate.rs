//! The hidden `generate-man DIR` and `generate-completions SHELL` subcommands: man pages
//! (clap_mangen) and shell completions (clap_complete) from the clap grammar itself, for
//! `scripts/package.sh`. Subcommands rather than a build.rs, so an ordinary build does
//! not render them (and does not compile the generators as build dependencies).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::util::error::{exit, IoContext, Result};

/// Write `pbsfs.1` and `pbsfs-SUB.1` for every visible subcommand into `dir` (created
/// when missing); prints the paths written.
pub fn man_pages(dir: &Path) -> Result<i32> {
    fs::create_dir_all(dir).ctx(format!("man page folder {}", dir.display()))?;
    for path in render_all(dir)? {
        println!("{}", path.display());
    }
    Ok(exit::OK)
}

/// Render every page; returns the files written.
fn render_all(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut root = Cli::command();
    // Building gives each subcommand its display name (`pbsfs-mount`) and the global
    // options (`--pbs-store`), as `--help` shows them.
    root.build();
    let mut written = vec![write_page(dir, root.clone(), None)?];
    for sub in root.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let extra = (sub.get_name() == "mount").then(crate::manual::mount_sections_roff);
        written.push(write_page(dir, sub.clone(), extra)?);
    }
    Ok(written)
}

/// One page: clap_mangen's sections; `extra` (roff) replaces its plain rendering of
/// `after_long_help`, which would fill preformatted text into one paragraph.
fn write_page(dir: &Path, cmd: clap::Command, extra: Option<String>) -> Result<PathBuf> {
    let man = clap_mangen::Man::new(cmd.clone()).manual("pbsfs manual");
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    let Some(roff) = extra else {
        man.render(&mut buf)
            .ctx(format!("render {}", path.display()))?;
        fs::write(&path, &buf).ctx(format!("man page {}", path.display()))?;
        return Ok(path);
    };
    let render = |buf: &mut Vec<u8>| -> std::io::Result<()> {
        man.render_title(buf)?;
        man.render_name_section(buf)?;
        man.render_synopsis_section(buf)?;
        man.render_description_section(buf)?;
        man.render_options_section(buf)?;
        buf.write_all(roff.as_bytes())
    };
    render(&mut buf).ctx(format!("render {}", path.display()))?;
    fs::write(&path, &buf).ctx(format!("man page {}", path.display()))?;
    Ok(path)
}

/// Print the completion script of `shell`: subcommands, options and value names; for
/// bash, zsh and fish also the group and snapshot names of the store on the command line.
pub fn completions(shell: clap_complete::Shell) -> Result<i32> {
    let script = completion_script(shell);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .ctx("write the completion script")?;
    Ok(exit::OK)
}

/// The line of `completion_names.zsh` that clap_complete's script replaces.
const ZSH_CLAP_LINE: &str = "# clap_complete's script goes here.\n";

/// clap_complete's script for `shell`, joined with ours that completes names: bash's and
/// fish's follow it; zsh's wraps it, so that its first completion when autoloaded
/// already offers names (see completion_names.zsh).
fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    use clap_complete::Shell;
    let mut clap = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "pbsfs", &mut clap);
    let join = |head: &str, tail: &str| [head.as_bytes(), &clap, tail.as_bytes()].concat();
    match shell {
        Shell::Bash => join("", include_str!("completion_names.bash")),
        Shell::Fish => join("", include_str!("completion_names.fish")),
        Shell::Zsh => {
            let (head, tail) = include_str!("completion_names.zsh")
                .split_once(ZSH_CLAP_LINE)
                .expect("completion_names.zsh has the line for clap's script");
            join(head, tail)
        }
        _ => clap,
    }
}

/// `complete-names`: `TYPE/ID`, `TYPE/ID/latest` and `TYPE/ID/TIME` of every finished
/// snapshot of the namespace, from folder names and manifest presence only (no manifest
/// is decoded), so completing in a large store stays quick.
pub fn names(store: &Path, ns: Option<&str>, pbs: Option<&str>) -> Result<i32> {
    let ds = super::open_store(store, pbs)?;
    let ns = super::parse_ns(ns)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for g in ds.list_groups(&ns)? {
        let snaps: Vec<_> = ds
            .list_snapshots(&g)?
            .into_iter()
            .filter(|s| s.finished)
            .collect();
        writeln!(out, "{}", g.name()).ctx("stdout")?;
        if !snaps.is_empty() {
            writeln!(out, "{}/latest", g.name()).ctx("stdout")?;
        }
        for s in snaps {
            writeln!(out, "{}", s.dir.name()).ctx("stdout")?;
        }
    }
    out.flush().ctx("stdout")?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap_complete::Shell;

    #[test]
    fn zsh_script_starts_as_a_completion_file_and_holds_clap_s_whole_script() {
        let clap = {
            let mut v = Vec::new();
            clap_complete::generate(Shell::Zsh, &mut Cli::command(), "pbsfs", &mut v);
            String::from_utf8(v).unwrap()
        };
        let ours = String::from_utf8(completion_script(Shell::Zsh)).unwrap();
        assert!(ours.starts_with("#compdef pbsfs\n"), "{}", &ours[..80]);
        assert!(ours.contains(&format!("_pbsfs_clap_load() {{\n{clap}}}\n")));
        assert!(!ours.contains(ZSH_CLAP_LINE));
        for shell in [Shell::Bash, Shell::Fish] {
            let ours = String::from_utf8(completion_script(shell)).unwrap();
            assert!(ours.contains("complete-names"), "{shell}");
        }
    }

    #[test]
    fn one_page_per_visible_subcommand_and_the_mount_page_has_its_sections() {
        let dir = std::env::temp_dir().join(format!(
            "pbsfs-man-{}-{}",
            std::process::id(),
            crate::store::files::random_suffix(6)
        ));
        fs::create_dir_all(&dir).unwrap();
        let written = render_all(&dir).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in ["pbsfs.1", "pbsfs-mount.1", "pbsfs-verify.1", "pbsfs-gc.1"] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("generate") || n == "pbsfs-help.1"),
            "hidden ones left out: {names:?}"
        );
        let mount = fs::read_to_string(dir.join("pbsfs-mount.1")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        for want in [
            ".SH \"LAYOUT\"",
            ".SH \"ERRORS\"",
            "EROFS",
            "\\-\\-cache\\-size",
        ] {
            assert!(mount.contains(want), "{want} in:\n{mount}");
        }
    }
}
