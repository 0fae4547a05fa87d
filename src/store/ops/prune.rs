//! Prune selection, exactly PBS's rules (spec §11.2): snapshots newest first; only the
//! newest snapshot may be kept unfinished ("keep-partial"); rules last, hourly, daily,
//! weekly (ISO), monthly, yearly in local time, each skipping periods already covered
//! by earlier rules; protected snapshots take no slot; no option keeps everything.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::store::SnapshotInfo;
use crate::util::error::{Error, Result};
use crate::util::sys;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepOptions {
    pub last: Option<u64>,
    pub hourly: Option<u64>,
    pub daily: Option<u64>,
    pub weekly: Option<u64>,
    pub monthly: Option<u64>,
    pub yearly: Option<u64>,
}

impl KeepOptions {
    /// No keep option: PBS keeps every snapshot.
    pub fn keeps_all(&self) -> bool {
        *self == KeepOptions::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneMark {
    Keep,
    KeepPartial,
    Protected,
    Remove,
}

impl PruneMark {
    pub fn keeps(self) -> bool {
        !matches!(self, PruneMark::Remove)
    }
}

impl fmt::Display for PruneMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PruneMark::Keep => "keep",
            PruneMark::KeepPartial => "keep-partial",
            PruneMark::Protected => "protected",
            PruneMark::Remove => "remove",
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Period {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// ISO 8601 week-based year and week of a local date.
fn iso_week(year: i32, yday: u32, wday: u32) -> (i32, u32) {
    let weekday = if wday == 0 { 7 } else { wday } as i32; // Monday = 1
    let week = (yday as i32 + 1 - weekday + 10) / 7;
    if week < 1 {
        return (year - 1, weeks_in_year(year - 1));
    }
    if week as u32 > weeks_in_year(year) {
        return (year + 1, 1);
    }
    (year, week as u32)
}

fn weeks_in_year(y: i32) -> u32 {
    // Weekday of Jan 1 (0 = Sunday); 1970-01-01 was a Thursday.
    let jan1 = (crate::util::time::days_from_civil(y as i64, 1, 1) + 4).rem_euclid(7);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if jan1 == 4 || (leap && jan1 == 3) {
        53
    } else {
        52
    }
}

fn period_id(p: Period, time: i64) -> Result<String> {
    if let Period::Last = p {
        return Ok(time.to_string());
    }
    let tm = sys::localtime(time).map_err(|e| Error::io(format!("local time of {time}"), e))?;
    Ok(match p {
        Period::Last => unreachable!(),
        Period::Hourly => format!("{}/{:02}/{:02}/{:02}", tm.year, tm.month, tm.mday, tm.hour),
        Period::Daily => format!("{}/{:02}/{:02}", tm.year, tm.month, tm.mday),
        Period::Weekly => {
            let (y, w) = iso_week(tm.year, tm.yday, tm.wday);
            format!("{y}/{w:02}")
        }
        Period::Monthly => format!("{}/{:02}", tm.year, tm.month),
        Period::Yearly => format!("{}", tm.year),
    })
}

/// Decide the fate of every snapshot of one group. Returns them newest first.
pub fn compute_prune(
    mut list: Vec<SnapshotInfo>,
    opts: &KeepOptions,
) -> Result<Vec<(SnapshotInfo, PruneMark)>> {
    list.sort_by_key(|s| std::cmp::Reverse(s.dir.time));
    if opts.keeps_all() {
        return Ok(list.into_iter().map(|s| (s, PruneMark::Keep)).collect());
    }
    let mut mark: HashMap<i64, PruneMark> = HashMap::new();
    // Only the newest snapshot may stay unfinished (a backup may be running).
    let mut keep_unfinished = true;
    for s in &list {
        if s.finished {
            keep_unfinished = false;
        } else {
            let m = if keep_unfinished {
                PruneMark::KeepPartial
            } else {
                PruneMark::Remove
            };
            mark.insert(s.dir.time, m);
            keep_unfinished = false;
        }
    }
    let rules = [
        (opts.last, Period::Last),
        (opts.hourly, Period::Hourly),
        (opts.daily, Period::Daily),
        (opts.weekly, Period::Weekly),
        (opts.monthly, Period::Monthly),
        (opts.yearly, Period::Yearly),
    ];
    for (count, period) in rules {
        let Some(n) = count else { continue };
        let mut covered = HashSet::new();
        for s in &list {
            if mark.get(&s.dir.time) == Some(&PruneMark::Keep) {
                covered.insert(period_id(period, s.dir.time)?);
            }
        }
        let mut picked = HashSet::new();
        for s in &list {
            if mark.contains_key(&s.dir.time) {
                continue;
            }
            if s.protected {
                mark.insert(s.dir.time, PruneMark::Protected);
                continue;
            }
            let id = period_id(period, s.dir.time)?;
            if covered.contains(&id) {
                continue;
            }
            if picked.contains(&id) {
                mark.insert(s.dir.time, PruneMark::Remove);
            } else {
                if picked.len() as u64 >= n {
                    break;
                }
                picked.insert(id);
                mark.insert(s.dir.time, PruneMark::Keep);
            }
        }
    }
    Ok(list
        .into_iter()
        .map(|s| {
            let m = match mark.get(&s.dir.time).copied().unwrap_or(PruneMark::Remove) {
                // A protected snapshot is never removed, whatever the rules reached.
                PruneMark::Remove if s.protected => PruneMark::Protected,
                m => m,
            };
            (s, m)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_weeks_at_year_boundaries() {
        // 2021-01-03 (Sunday) is in 2020-W53; 2024-12-30 (Monday) is in 2025-W01.
        assert_eq!(iso_week(2021, 2, 0), (2020, 53));
        assert_eq!(iso_week(2024, 364, 1), (2025, 1));
        assert_eq!(iso_week(2024, 0, 1), (2024, 1));
        assert_eq!(iso_week(2026, 0, 4), (2026, 1));
        assert_eq!(weeks_in_year(2020), 53);
        assert_eq!(weeks_in_year(2015), 53);
        assert_eq!(weeks_in_year(2023), 52);
    }
}
