//! Real editors saving `notes` through a real mount, driven through tmux: vim with its
//! default configuration, nano and emacs. Each save must be one transaction, visible in
//! the library right after the editor exits.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{describe, TempDir};
use crate::mount_util::*;

/// A detached tmux server of its own, running one command; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(dir: &Path, home: &Path, cmd: &str) -> Tmux {
        let socket = format!("pbsfs-{}", pbsfs::store::files::random_suffix(8));
        let out = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
            ])
            .args(["-x", "120", "-y", "40", "-c"])
            .arg(dir)
            .arg(cmd)
            .env("HOME", home)
            .env("TERM", "xterm-256color")
            .env_remove("TMUX")
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux new-session: {}", describe(&out));
        Tmux { socket }
    }

    fn keys(&self, keys: &[&str]) {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t"])
            .args(keys)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux send-keys {keys:?}: {}",
            describe(&out)
        );
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, text: &str) {
        assert!(
            poll(30, || self.screen().contains(text)),
            "waiting for {text:?}; screen:\n{}",
            self.screen()
        );
    }

    fn running(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "t"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_exit(&self) {
        assert!(
            poll(30, || !self.running()),
            "editor still running:\n{}",
            self.screen()
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

struct Setup {
    // Field order is drop order: the mount goes before its folder.
    m: Mounted,
    f: Fixture,
    home: PathBuf,
    _tmp: TempDir,
}

fn setup(tag: &str) -> Setup {
    let tmp = TempDir::new(tag);
    let f = fixture(&tmp);
    let home = tmp.join("home");
    fs::create_dir(&home).unwrap();
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    Setup {
        m,
        f,
        home,
        _tmp: tmp,
    }
}

/// Run an editor on snapshot notes ("first\n"), feed it keys, and check the one save.
fn edit(tag: &str, cmd: &str, ready: &str, script: &[&[&str]], want: &str) {
    let s = setup(tag);
    let dir = s.m.path("vm/100/2024-05-02T08:11:33Z");
    let before = s.m.commits();
    let t = Tmux::start(&dir, &s.home, cmd);
    t.wait_for(ready);
    for keys in script {
        t.keys(keys);
    }
    t.wait_exit();
    let notes =
        s.f.ds
            .load_manifest(&s.f.d1)
            .unwrap()
            .notes()
            .unwrap_or("")
            .to_string();
    assert_eq!(notes, want, "log:\n{}", s.m.log_text());
    assert_eq!(
        s.m.commits(),
        before + 1,
        "one transaction; log:\n{}",
        s.m.log_text()
    );
    // Nothing the editor left behind reached the datastore.
    let mut names: Vec<String> = fs::read_dir(s.f.ds.snapshot_path(&s.f.d1))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "drive-scsi0.img.fidx",
            "index.json.blob",
            "qemu-server.conf.blob"
        ]
    );
    // The tmux server (started in the snapshot folder) and the editor may still be
    // exiting after the session ended: the mount is busy until they are gone.
    drop(t);
    let mp = s.m.mp.clone();
    assert!(
        poll(30, || processes_inside(&mp).is_empty()),
        "still inside the mount: {:?}",
        processes_inside(&mp)
    );
    s.m.unmount();
}

/// Processes whose working folder or an open file lies below `mp`.
fn processes_inside(mp: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for p in fs::read_dir("/proc").unwrap().flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut links = vec![p.path().join("cwd")];
        if let Ok(fds) = fs::read_dir(p.path().join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        if links
            .iter()
            .any(|l| fs::read_link(l).is_ok_and(|t| t.starts_with(mp)))
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn vim_with_its_default_config_saves_notes_once() {
    edit(
        "ed-vim",
        "vim notes",
        "first",
        &[&["ggdG"], &["ivim says hi", "Escape"], &[":wq", "Enter"]],
        "vim says hi\n",
    );
}

#[test]
fn nano_saves_notes_once() {
    edit(
        "ed-nano",
        "nano notes",
        "first",
        &[&["C-k"], &["nano says hi"], &["C-o"], &["Enter"], &["C-x"]],
        "nano says hi\n",
    );
}

#[test]
fn emacs_saves_notes_once() {
    edit(
        "ed-emacs",
        "emacs -nw -Q notes",
        "first",
        &[
            &["C-x", "h"],
            &["C-w"],
            &["emacs says hi", "C-j"],
            &["C-x", "C-s"],
            &["C-x", "C-c"],
        ],
        "emacs says hi\n",
    );
}
