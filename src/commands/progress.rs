//! Progress bars of the long commands (init, backup, restore, verify, gc, prune): drawn on
//! stderr only when stderr is a terminal, so a pipe, a log file or a script gets the
//! summary alone; JSON on stdout is never touched (a bar on a terminal's stderr stays
//! even with `--output-format json`). A bar is cleared before the summary is printed.
//!
//! Cost when there is no terminal: no bar exists and the library gets a `None` callback.
//! When there is one: positions go through indicatif's lock-free, rate-limited
//! `set_position`; the length and prefix, which take the bar's lock, are set only when
//! they change.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::store::ops::Progress;

/// What a bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Items: folders, snapshots, index files, chunks.
    Count,
    /// Bytes, with a rate; a total of 0 means unknown (a spinner instead of a bar).
    Bytes,
}

/// A bar on stderr when it is a terminal; otherwise nothing, and every call is a no-op.
pub struct Bar {
    bar: Option<ProgressBar>,
    unit: Unit,
    /// The length last set (`u64::MAX`: none yet).
    len: AtomicU64,
    /// The key of the prefix last set (`u64::MAX`: the initial one).
    prefix_key: AtomicU64,
    /// Switched to the spinner of an unknown byte total.
    spinner: AtomicBool,
}

impl Bar {
    /// A bar titled `prefix` when stderr is a terminal.
    pub fn new(unit: Unit, prefix: &str) -> Bar {
        let bar = std::io::stderr().is_terminal().then(|| {
            // Styled while hidden: drawn first when the first count arrives, not as an
            // empty "0/0" (which indicatif draws as complete).
            let b = ProgressBar::hidden();
            b.set_style(style(unit, false));
            b.set_prefix(prefix.to_string());
            b.set_draw_target(ProgressDrawTarget::stderr());
            b
        });
        Bar {
            bar,
            unit,
            len: AtomicU64::new(u64::MAX),
            prefix_key: AtomicU64::new(u64::MAX),
            spinner: AtomicBool::new(false),
        }
    }

    /// Is a bar drawn (stderr is a terminal)?
    pub fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    /// `done` of `total`.
    pub fn set(&self, done: u64, total: u64) {
        let Some(b) = &self.bar else { return };
        if total == 0 && self.unit == Unit::Bytes && !self.spinner.swap(true, Ordering::Relaxed) {
            b.set_style(style(self.unit, true));
        }
        if self.len.swap(total, Ordering::Relaxed) != total {
            b.set_length(total);
        }
        b.set_position(done);
    }

    /// Retitle the bar when `key` differs from the last one (`text` is built only then).
    pub fn set_prefix(&self, key: u64, text: impl FnOnce() -> String) {
        let Some(b) = &self.bar else { return };
        if self.prefix_key.swap(key, Ordering::Relaxed) != key {
            b.set_prefix(text());
        }
    }

    /// Show a store operation's progress: the phase in the title, the counts in the bar.
    pub fn ops(&self, p: Progress) {
        match p {
            Progress::ChunkFolders { done, total } => self.set(done, total),
            Progress::Verify {
                snapshot,
                snapshots,
                chunks,
                chunks_total,
            } => {
                self.set_prefix(snapshot, || {
                    format!("verify: snapshot {snapshot}/{snapshots}, chunks")
                });
                self.set(chunks, chunks_total);
            }
            Progress::GcMark { done, total } => {
                self.set_prefix(1, || "gc phase 1/2 (mark): index files".into());
                self.set(done, total);
            }
            Progress::GcSweep { done, total } => {
                self.set_prefix(2, || "gc phase 2/2 (sweep): chunk folders".into());
                self.set(done, total);
            }
        }
    }

    /// Clear the bar, if one was drawn, before the summary is printed.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    /// An error ends a command early: the message must not land behind a bar.
    fn drop(&mut self) {
        self.finish();
    }
}

fn style(unit: Unit, unknown_total: bool) -> ProgressStyle {
    let template = match (unit, unknown_total) {
        (Unit::Count, _) => "{prefix} {pos}/{len} {wide_bar} {elapsed} eta {eta}",
        (Unit::Bytes, false) => {
            "{prefix} {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} eta {eta}"
        }
        (Unit::Bytes, true) => "{prefix} {spinner} {bytes} {binary_bytes_per_sec} {elapsed}",
    };
    ProgressStyle::with_template(template).expect("a valid template")
}

/// The byte bar of backup and restore, whose options take a plain `fn(done, total)`.
static BYTES: OnceLock<Bar> = OnceLock::new();

/// The byte progress callback of a backup or restore titled `prefix`: `Some` only when
/// stderr is a terminal.
pub fn terminal_bytes(prefix: &str) -> Option<fn(u64, u64)> {
    BYTES
        .get_or_init(|| Bar::new(Unit::Bytes, prefix))
        .is_drawn()
        .then_some(bytes_progress as fn(u64, u64))
}

fn bytes_progress(done: u64, total: u64) {
    if let Some(bar) = BYTES.get() {
        bar.set(done, total);
    }
}

/// Clear the byte bar, if one was drawn, before the summary is printed.
pub fn finish_bytes() {
    if let Some(bar) = BYTES.get() {
        bar.finish();
    }
}
