//! A folder where ingestion drops Parquet files.
//!
//! A file counts as arrived when it is complete: files with temporary names
//! (a leading `.`, or ending in `.tmp`, `.partial`, `.part`, `._COPYING_`)
//! are ignored until they are renamed into place, and a file is handed out
//! only after its size and modification time stayed the same for the settle
//! time, so a file that is still growing is never read. Files come out
//! oldest first (modification time, then name).
//!
//! Entries that match the pattern but are not regular files with UTF-8
//! names (symbolic links, directories, FIFOs, sockets, devices, names that
//! are not UTF-8) are never read and never followed: each is reported once
//! as a [`Refusal`] (the daemon logs it and counts it in
//! `dqmon_drop_refused_total`), so nothing is skipped without a trace.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A file in the drop folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedFile {
    pub path: PathBuf,
    pub name: String,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

/// An entry of the drop folder that is not read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The name as printed: escaped, so a newline or invalid UTF-8 in it
    /// cannot forge a log line.
    pub name: String,
    /// A short label for metrics: `symlink`, `directory`, `special`, `name`.
    pub kind: &'static str,
    /// A sentence for the log.
    pub reason: &'static str,
}

/// One listing: the files, and the refused entries with their raw names.
type Scan = (Vec<DroppedFile>, Vec<(OsString, Refusal)>);

/// Scans a drop folder and tells which files are complete.
pub struct DropFolder {
    dir: PathBuf,
    pattern: glob::Pattern,
    settle: Duration,
    /// Name to (size, mtime, unchanged since, handed out as ready).
    seen: HashMap<String, (u64, i128, Instant, bool)>,
    /// Refused entries present at the last scan (reported once each).
    refused: HashSet<OsString>,
    /// Refusals not yet taken by [`DropFolder::take_refusals`].
    new_refusals: Vec<Refusal>,
}

/// Whether a name is a writer's temporary name.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        || [".tmp", ".partial", ".part", "._COPYING_", ".crdownload"]
            .iter()
            .any(|s| name.ends_with(s))
}

fn mtime_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

impl DropFolder {
    /// `pattern` is a file-name glob such as `*.parquet`.
    pub fn new(
        dir: &Path,
        pattern: &str,
        settle: Duration,
    ) -> Result<DropFolder, glob::PatternError> {
        Ok(DropFolder {
            dir: dir.to_path_buf(),
            pattern: glob::Pattern::new(pattern)?,
            settle,
            seen: HashMap::new(),
            refused: HashSet::new(),
            new_refusals: Vec::new(),
        })
    }

    /// Entries refused since the last call, each reported once while it stays.
    pub fn take_refusals(&mut self) -> Vec<Refusal> {
        std::mem::take(&mut self.new_refusals)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every matching, non-temporary regular file, oldest first.
    pub fn list(&self) -> std::io::Result<Vec<DroppedFile>> {
        Ok(self.scan()?.0)
    }

    /// The files, and the matching entries refused (with their raw names).
    fn scan(&self) -> std::io::Result<Scan> {
        let mut out = Vec::new();
        let mut refused = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let raw = entry.file_name();
            let lossy = raw.to_string_lossy().into_owned();
            if is_temporary(&lossy) || !self.pattern.matches(&lossy) {
                continue;
            }
            let refuse = |kind, reason| Refusal {
                name: format!("{raw:?}"),
                kind,
                reason,
            };
            let Some(name) = raw.to_str().map(str::to_string) else {
                refused.push((
                    raw.clone(),
                    refuse(
                        "name",
                        "its name is not UTF-8: two such names could read as one; rename the file",
                    ),
                ));
                continue;
            };
            // the entry itself, never what a link points to
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                refused.push((raw.clone(), refuse("symlink", "it is a symbolic link, which dqmon never follows (it could point out of the drop folder); move or copy the file in")));
                continue;
            }
            if kind.is_dir() {
                refused.push((
                    raw.clone(),
                    refuse("directory", "it is a directory; drop files, not folders"),
                ));
                continue;
            }
            if !kind.is_file() {
                refused.push((
                    raw.clone(),
                    refuse(
                        "special",
                        "it is not a regular file (a FIFO, socket or device)",
                    ),
                ));
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            out.push(DroppedFile {
                path: entry.path(),
                name,
                size: meta.len(),
                mtime_ns: meta.modified().map(mtime_ns).unwrap_or(0),
            });
        }
        out.sort_by(|a, b| (a.mtime_ns, &a.name).cmp(&(b.mtime_ns, &b.name)));
        refused.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, refused))
    }

    /// The files whose size and modification time have not changed for the
    /// settle time, as of `now`. Call repeatedly; a file changes → its clock restarts.
    pub fn ready(&mut self, now: Instant) -> std::io::Result<Vec<DroppedFile>> {
        let (files, refused) = self.scan()?;
        let mut present = HashSet::new();
        for (raw, r) in refused {
            if !self.refused.contains(&raw) {
                self.new_refusals.push(r);
            }
            present.insert(raw);
        }
        self.refused = present;
        let mut ready = Vec::new();
        let mut still = HashMap::new();
        for f in files {
            let (since, handed) = match self.seen.get(&f.name) {
                Some(&(size, mtime, since, handed)) if size == f.size && mtime == f.mtime_ns => {
                    (since, handed)
                }
                _ => (now, false),
            };
            let settled = now.duration_since(since) >= self.settle;
            if settled {
                ready.push(f.clone());
            }
            still.insert(
                f.name.clone(),
                (f.size, f.mtime_ns, since, handed || settled),
            );
        }
        self.seen = still;
        Ok(ready)
    }

    /// How long until the earliest file not yet handed out may be ready
    /// (zero: scan again now); `None` when every file was handed out.
    pub fn next_check(&self, now: Instant) -> Option<Duration> {
        self.seen
            .values()
            .filter(|&&(_, _, _, handed)| !handed)
            .map(|&(_, _, since, _)| (since + self.settle).saturating_duration_since(now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_and_pattern_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "a.parquet",
            ".b.parquet",
            "c.parquet.tmp",
            "d.csv",
            "e.parquet.partial",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let f = DropFolder::new(dir.path(), "*.parquet", Duration::ZERO).unwrap();
        let names: Vec<_> = f.list().unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, vec!["a.parquet"]);
    }

    /// Links (inside and out of the folder), directories, FIFOs and
    /// non-UTF-8 names are refused once each, with a reason, never read.
    #[test]
    fn entries_that_are_not_plain_files_are_refused_once_with_a_reason() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.parquet");
        std::fs::write(&secret, b"outside").unwrap();
        let d = dir.path();
        std::fs::write(d.join("good.parquet"), b"x").unwrap();
        std::os::unix::fs::symlink(&secret, d.join("out.parquet")).unwrap();
        std::os::unix::fs::symlink(d.join("good.parquet"), d.join("in.parquet")).unwrap();
        std::fs::create_dir(d.join("folder.parquet")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(d.join("pipe.parquet"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let odd = std::ffi::OsStr::from_bytes(b"bad\xff\nALERT.parquet");
        std::fs::write(d.join(odd), b"x").unwrap();

        let mut f = DropFolder::new(d, "*.parquet", Duration::ZERO).unwrap();
        let ready = f.ready(Instant::now()).unwrap();
        let names: Vec<_> = ready.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["good.parquet"]);
        let mut refused: Vec<(&str, String)> = f
            .take_refusals()
            .into_iter()
            .map(|r| (r.kind, r.name))
            .collect();
        refused.sort();
        assert_eq!(
            refused,
            vec![
                ("directory", "\"folder.parquet\"".to_string()),
                ("name", "\"bad\\xFF\\nALERT.parquet\"".to_string()),
                ("special", "\"pipe.parquet\"".to_string()),
                ("symlink", "\"in.parquet\"".to_string()),
                ("symlink", "\"out.parquet\"".to_string()),
            ]
        );
        assert!(refused.iter().all(|(_, n)| !n.contains('\n')));
        // reported once while they stay; again when one comes back
        f.ready(Instant::now()).unwrap();
        assert!(f.take_refusals().is_empty());
        std::fs::remove_dir(d.join("folder.parquet")).unwrap();
        f.ready(Instant::now()).unwrap();
        std::fs::create_dir(d.join("folder.parquet")).unwrap();
        f.ready(Instant::now()).unwrap();
        assert_eq!(f.take_refusals().len(), 1);
    }

    #[test]
    fn a_growing_file_is_not_ready_until_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.parquet");
        std::fs::write(&p, b"one").unwrap();
        let mut f = DropFolder::new(dir.path(), "*.parquet", Duration::from_millis(100)).unwrap();
        let t0 = Instant::now();
        assert!(f.ready(t0).unwrap().is_empty());
        std::fs::write(&p, b"one two").unwrap();
        assert!(
            f.ready(t0 + Duration::from_millis(150)).unwrap().is_empty(),
            "changed: clock restarts"
        );
        assert_eq!(f.ready(t0 + Duration::from_millis(300)).unwrap().len(), 1);
    }
}
