//! The Debian package: `scripts/package.sh` run on the debug binary (no release build),
//! its control data and file list, then installed into a scratch root (`dpkg -x`) and
//! used from there: `--version`, every man page through `man -l`, the completion
//! scripts (bash's checked with `bash -n` and run to complete subcommands, options and
//! the group and snapshot names of a store; zsh's and fish's run in those shells to
//! complete the same names).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;

use crate::common::{ok, stdout, TempDir, BIN};

/// Run `prog ARGS`, requiring success; returns stdout.
#[track_caller]
fn run_ok(prog: &str, args: &[&str]) -> String {
    ok(&Command::new(prog).args(args).output().unwrap())
}

/// The visible subcommands of the grammar (what has a man page).
fn subcommands() -> Vec<String> {
    pbsfs::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect()
}

/// `man -l PAGE` rendered as plain text, 100 columns.
fn man(page: &Path) -> String {
    let out: Output = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    ok(&out)
}

#[test]
fn the_package_installs_binary_helper_man_pages_and_completions() {
    let tmp = TempDir::new("package");
    let out_dir = tmp.join("out");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package.sh");
    let built = run_ok(
        script.to_str().unwrap(),
        &[
            "--binary",
            BIN,
            "--out",
            out_dir.to_str().unwrap(),
            "--compress",
            "gzip",
        ],
    );
    let deb = built.trim();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        deb.ends_with(&format!(
            "/pbsfs_{version}_{}.deb",
            run_ok("dpkg", &["--print-architecture"]).trim()
        )),
        "{deb}"
    );

    let info = run_ok("dpkg-deb", &["-I", deb]);
    for want in ["Package: pbsfs\n", &format!("Version: {version}\n")] {
        assert!(info.contains(want), "{want} in:\n{info}");
    }
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap();
    assert!(
        depends.contains("fuse3"),
        "fusermount3 comes with fuse3: {depends}"
    );

    let list = run_ok("dpkg-deb", &["-c", deb]);
    let mut want: Vec<String> = [
        "./usr/bin/pbsfs",
        "./sbin/mount.fuse.pbsfs -> /usr/bin/pbsfs",
        "./usr/share/man/man1/pbsfs.1.gz",
        "./usr/share/bash-completion/completions/pbsfs",
        "./usr/share/zsh/vendor-completions/_pbsfs",
        "./usr/share/fish/vendor_completions.d/pbsfs.fish",
        "./usr/share/doc/pbsfs/README.md.gz",
        "./usr/share/doc/pbsfs/copyright",
    ]
    .map(String::from)
    .to_vec();
    let subs = subcommands();
    assert!(
        subs.len() >= 15 && subs.contains(&"mount".to_string()),
        "{subs:?}"
    );
    want.extend(
        subs.iter()
            .map(|s| format!("./usr/share/man/man1/pbsfs-{s}.1.gz")),
    );
    for w in &want {
        assert!(
            list.lines().any(|l| l.ends_with(&format!(" {w}"))),
            "{w} in:\n{list}"
        );
    }
    assert!(
        !list.contains("generate"),
        "hidden subcommands get no page:\n{list}"
    );
    assert!(
        list.lines().all(|l| l.contains(" root/root ")),
        "owned by root:\n{list}"
    );

    // Installed into a scratch root.
    let root = tmp.join("root");
    run_ok("dpkg", &["-x", deb, root.to_str().unwrap()]);
    let bin = root.join("usr/bin/pbsfs");
    let v = run_ok(bin.to_str().unwrap(), &["--version"]);
    assert_eq!(v.trim(), format!("pbsfs {version}"));
    assert_eq!(
        fs::read_link(root.join("sbin/mount.fuse.pbsfs")).unwrap(),
        Path::new("/usr/bin/pbsfs")
    );

    let man1 = root.join("usr/share/man/man1");
    let mount = man(&man1.join("pbsfs-mount.1.gz"));
    for want in [
        "pbsfs-mount - Mount the datastore",
        "LAYOUT",
        "latest -> 2024-05-02T08:11:33Z",
        "EDITING",
        "Truncating",
        "ERRORS",
        "EROFS",
        "EILSEQ",
        "EAGAIN",
        "fuse.pbsfs  ro,allow_other,nofail",
        "--cache-size",
    ] {
        assert!(mount.contains(want), "{want} in pbsfs-mount(1):\n{mount}");
    }
    // Preformatted blocks stay line by line.
    assert!(
        mount
            .lines()
            .any(|l| l.trim_start().starts_with("EIO ") && l.contains("corrupt")),
        "{mount}"
    );
    for sub in &subs {
        let page = man(&man1.join(format!("pbsfs-{sub}.1.gz")));
        let name = page
            .lines()
            .skip_while(|l| l != &"NAME")
            .nth(1)
            .unwrap_or("");
        let words: Vec<&str> = name.split_whitespace().take(2).collect();
        assert_eq!(
            words,
            [&format!("pbsfs-{sub}"), "-"],
            "NAME of {sub}:\n{page}"
        );
    }
    let top = man(&man1.join("pbsfs.1.gz"));
    assert!(
        top.contains("pbsfs-mount(1)") || top.contains("mount"),
        "{top}"
    );

    let bash = root.join("usr/share/bash-completion/completions/pbsfs");
    run_ok("bash", &["-n", bash.to_str().unwrap()]);
    // Completing `pbsfs mou` and `pbsfs mount --cac` with the installed script.
    let complete = |words: &str| -> String {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _pbsfs pbsfs \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bash.display()
        );
        stdout(&Command::new("bash").arg("-c").arg(script).output().unwrap())
    };
    let c = complete("pbsfs mou");
    assert_eq!(c.trim(), "mount", "subcommands complete");
    let c = complete("pbsfs mount --ca");
    assert_eq!(c.trim(), "--cache-size", "options complete");
    // (clap_complete's bash script also offers the hidden generate-* subcommands.)
    let c = complete("pbsfs snapshots --output-format ''");
    let values: Vec<&str> = c.split_whitespace().collect();
    assert!(
        values.contains(&"json") && values.contains(&"text"),
        "values complete: {c}"
    );

    let zsh = fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_pbsfs")).unwrap();
    assert!(zsh.starts_with("#compdef pbsfs\n"), "{}", &zsh[..80]);
    assert!(zsh.contains("'--cache-size=["), "zsh: mount options");
    let fish =
        fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/pbsfs.fish")).unwrap();
    assert!(
        fish.contains("complete -c pbsfs") && fish.contains("-l cache-size"),
        "fish"
    );
}

#[test]
fn mount_help_shows_the_layout_editing_rules_and_errnos() {
    let help = run_ok(BIN, &["mount", "--help"]);
    for want in [
        "LAYOUT:",
        "EDITING:",
        "ERRORS:",
        "EROFS",
        "FSTAB AND MOUNT(8):",
    ] {
        assert!(help.contains(want), "{want} in:\n{help}");
    }
    let short = run_ok(BIN, &["mount", "-h"]);
    assert!(!short.contains("ERRORS:"), "-h stays short:\n{short}");
    let top = run_ok(BIN, &["--help"]);
    assert!(
        !top.contains("generate") && !top.contains("complete-names"),
        "packagers' subcommands are hidden:\n{top}"
    );
}

/// `pbsfs help SUBCOMMAND` is `pbsfs SUBCOMMAND --help`, and the operands and options
/// a newcomer first meets are described there.
#[test]
fn help_subcommand_describes_every_operand_and_option() {
    for (sub, wants) in [
        (
            "snapshots",
            &[
                "<STORE>",
                "The datastore folder",
                "--ns <NS>",
                "The namespace",
            ][..],
        ),
        ("backup", &["--notes <NOTES>", "Notes of the new snapshot"]),
        ("cat", &["<SNAPSHOT>", "TYPE/ID/TIME or TYPE/ID/latest"]),
    ] {
        let help = run_ok(BIN, &["help", sub]);
        assert_eq!(help, run_ok(BIN, &[sub, "--help"]), "help {sub}");
        for want in wants {
            assert!(help.contains(want), "{want} in `pbsfs help {sub}`:\n{help}");
        }
    }
}

/// The bash script completes GROUP and SNAPSHOT operands with the names of the store
/// given before them (colons of snapshot times included), honours `--ns`, and leaves
/// other words to clap's completion.
#[test]
fn bash_completes_group_and_snapshot_names_of_the_store() {
    let tmp = TempDir::new("complete-names");
    let f = crate::mount_util::fixture(&tmp);
    let script = tmp.join("pbsfs.bash");
    fs::write(&script, run_ok(BIN, &["generate-completions", "bash"])).unwrap();
    run_ok("bash", &["-n", script.to_str().unwrap()]);
    let store = f.store.to_str().unwrap();
    // COMP_WORDS as bash splits them (at colons too); COMP_LINE as typed.
    let complete = |line: &str| -> Vec<String> {
        let script = format!(
            "source {}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; \
             COMP_WORDBREAKS=$' \\t\\n\"'\"'\"'@><=;|&(:'; \
             read -ra COMP_WORDS <<< \"$COMP_LINE\"; \
             [[ $COMP_LINE == *' ' ]] && COMP_WORDS+=(''); \
             COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _pbsfs_with_names pbsfs \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = with_pbsfs_on_path(Command::new("bash").arg("-c").arg(script))
            .output()
            .unwrap();
        let mut v: Vec<String> = stdout(&out).lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(
        complete(&format!("pbsfs cat {store} vm/1")),
        [
            "vm/100",
            "vm/100/2024-05-02T08:11:33Z",
            "vm/100/2024-05-03T08:11:33Z",
            "vm/100/latest"
        ]
    );
    // Past a colon bash replaces only what follows it.
    assert_eq!(
        complete(&format!("pbsfs notes {store} vm/100/2024-05-02T08:1")),
        ["11:33Z"]
    );
    // An option with a value before the operand; a namespace.
    let prod = complete(&format!("pbsfs snapshots --ns prod {store} "));
    assert!(prod.contains(&"host/web/latest".to_string()), "{prod:?}");
    assert!(!prod.iter().any(|n| n.starts_with("vm/100")), "{prod:?}");
    // Both operands of diff; not the store operand, nor a third operand of cat.
    assert!(
        complete(&format!("pbsfs diff {store} vm/100/latest vm/100/l"))
            .contains(&"vm/100/latest".to_string())
    );
    assert!(!complete(&format!("pbsfs cat {store} vm/100/latest vm/"))
        .iter()
        .any(|n| n.starts_with("vm/100")));
    // Subcommands are still clap's.
    assert_eq!(complete("pbsfs snaps"), ["snapshots"]);
}

/// `cmd` with the pbsfs under test first on `PATH` (the completion scripts run
/// `pbsfs complete-names`) and no PBS configuration.
fn with_pbsfs_on_path(cmd: &mut Command) -> &mut Command {
    let bin_dir = Path::new(BIN).parent().unwrap();
    cmd.env(
        "PATH",
        format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
    )
    .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
}

/// The generated completion script of `shell`, written to `dir/file`.
fn completion_script(shell: &str, dir: &Path, file: &str) -> std::path::PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(file);
    fs::write(&path, run_ok(BIN, &["generate-completions", shell])).unwrap();
    path
}

/// The fish script completes GROUP and SNAPSHOT operands with the names of the store
/// given before them, by the bash script's rules, and leaves other words to clap's
/// completion. Driven by fish itself: `complete -C LINE` lists what TAB would offer.
#[test]
fn fish_completes_group_and_snapshot_names_of_the_store() {
    let tmp = TempDir::new("complete-names-fish");
    let f = crate::mount_util::fixture(&tmp);
    let script = completion_script("fish", &tmp.join("fish"), "pbsfs.fish");
    run_ok("fish", &["--no-execute", script.to_str().unwrap()]);
    let store = f.store.to_str().unwrap();
    let complete = |line: &str| -> Vec<String> {
        // No completion files of the system: only the script under test.
        let out = with_pbsfs_on_path(
            Command::new("fish")
                .args(["--no-config", "-c"])
                .arg("set -g fish_complete_path; source $argv[1]; complete -C $argv[2]")
                .arg(&script)
                .arg(line),
        )
        .output()
        .unwrap();
        // `NAME<TAB>DESCRIPTION` lines.
        let mut v: Vec<String> = ok(&out)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        complete(&format!("pbsfs cat {store} vm/1")),
        [
            "vm/100",
            "vm/100/2024-05-02T08:11:33Z",
            "vm/100/2024-05-03T08:11:33Z",
            "vm/100/latest"
        ]
    );
    assert_eq!(
        complete(&format!("pbsfs notes {store} vm/100/2024-05-02T08:1")),
        ["vm/100/2024-05-02T08:11:33Z"]
    );
    // An option with a value before the operand; a namespace, in both spellings.
    let prod = complete(&format!("pbsfs snapshots --ns prod {store} "));
    assert!(prod.contains(&"host/web/latest".to_string()), "{prod:?}");
    assert!(!prod.iter().any(|n| n.starts_with("vm/")), "{prod:?}");
    assert_eq!(
        complete(&format!("pbsfs catalog --ns=prod {store} host/web/l")),
        ["host/web/latest"]
    );
    // Both operands of diff; not a third operand of cat.
    assert_eq!(
        complete(&format!("pbsfs diff {store} vm/100/latest vm/100/l")),
        ["vm/100/latest"]
    );
    let third = complete(&format!("pbsfs cat {store} vm/100/latest vm/"));
    assert!(!third.iter().any(|n| n.starts_with("vm/100")), "{third:?}");
    // Subcommands and options are still clap's, options at a name operand too.
    assert_eq!(complete("pbsfs snaps"), ["snapshots"]);
    assert_eq!(complete(&format!("pbsfs cat {store} --n")), ["--ns"]);
}

/// The zsh script does the same, whether autoloaded from `fpath` (as the package
/// installs it) or sourced: driven by a real interactive zsh on a pseudo-terminal
/// (`zsh_complete.zsh`), where TAB runs menu completion through compinit's system and
/// each press's line is recorded.
#[test]
fn zsh_completes_group_and_snapshot_names_of_the_store() {
    let tmp = TempDir::new("complete-names-zsh");
    let f = crate::mount_util::fixture(&tmp);
    // Named as compinit finds it in fpath.
    let script = completion_script("zsh", &tmp.join("fpath"), "_pbsfs");
    run_ok("zsh", &["-n", script.to_str().unwrap()]);
    let store = f.store.to_str().unwrap();
    // (TAB presses, line typed): as many presses as matches cycle through them all.
    let cases: Vec<(usize, String)> = vec![
        (6, format!("pbsfs cat {store} vm/1")),
        (1, format!("pbsfs notes {store} vm/100/2024-05-02T08:1")),
        (5, format!("pbsfs snapshots --ns prod {store} ")),
        (1, format!("pbsfs catalog --ns=prod {store} host/web/l")),
        (1, format!("pbsfs diff {store} vm/100/latest vm/100/l")),
        (1, format!("pbsfs cat {store} vm/100/latest vm/")),
        (1, "pbsfs snaps".to_string()),
        (1, format!("pbsfs cat {store} --n")),
    ];
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/zsh_complete.zsh");
    for mode in ["fpath", "source"] {
        let out = tmp.join(format!("{mode}.out"));
        let mut cmd = Command::new("zsh");
        cmd.arg("-f").arg(&driver).arg(mode).arg(&script).arg(&out);
        for (tabs, line) in &cases {
            cmd.arg(tabs.to_string()).arg(line);
        }
        let run = with_pbsfs_on_path(&mut cmd).output().unwrap();
        let log = fs::read_to_string(tmp.join(format!("{mode}.out.log"))).unwrap_or_default();
        assert!(
            run.status.success(),
            "{mode}: {}\nterminal:\n{log}",
            crate::common::describe(&run)
        );
        let words = zsh_words(&fs::read_to_string(&out).unwrap());
        let got = |i: usize| -> &[String] {
            words
                .iter()
                .find(|(l, _)| l == &cases[i].1)
                .map(|(_, w)| &w[..])
                .unwrap_or_else(|| panic!("{mode}: no TAB recorded for {:?}", cases[i].1))
        };
        let ctx = format!("{mode}, terminal:\n{log}");
        assert_eq!(
            got(0),
            [
                "vm/100",
                "vm/100/2024-05-02T08:11:33Z",
                "vm/100/2024-05-03T08:11:33Z",
                "vm/100/latest"
            ],
            "{ctx}"
        );
        // A colon is no description separator.
        assert_eq!(got(1), ["vm/100/2024-05-02T08:11:33Z"], "{ctx}");
        let prod = got(2);
        assert!(
            prod.contains(&"host/web/latest".to_string()),
            "{prod:?} {ctx}"
        );
        assert!(!prod.iter().any(|n| n.starts_with("vm/")), "{prod:?} {ctx}");
        assert_eq!(got(3), ["host/web/latest"], "{ctx}");
        assert_eq!(got(4), ["vm/100/latest"], "{ctx}");
        assert!(!got(5).iter().any(|n| n.starts_with("vm/100")), "{ctx}");
        assert_eq!(got(6), ["snapshots"], "{ctx}");
        // (clap's zsh script spells options that take a value `--ns=`.)
        assert_eq!(got(7), ["--ns="], "{ctx}");
    }
}

/// `zsh_complete.zsh`'s record as (line typed, distinct last words after its TABs,
/// sorted). A line whose earlier words changed is kept whole, to fail the comparison.
fn zsh_words(record: &str) -> Vec<(String, Vec<String>)> {
    let mut cases: Vec<(String, Vec<String>)> = Vec::new();
    for l in record.lines() {
        if let Some(line) = l.strip_prefix("=== ") {
            cases.push((line.to_string(), Vec::new()));
        } else if let Some((line, words)) = cases.last_mut() {
            let base = &line[..line.rfind(' ').map_or(0, |i| i + 1)];
            let word = l.strip_prefix(base).unwrap_or(l).trim_end().to_string();
            if !words.contains(&word) {
                words.push(word);
            }
        }
    }
    for (_, words) in &mut cases {
        words.sort();
    }
    cases
}
