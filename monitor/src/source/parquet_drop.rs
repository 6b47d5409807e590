//! A folder where ingestion drops Parquet files.
//!
//! A file counts as arrived when it is complete: files with temporary names
//! (a leading `.`, or ending in `.tmp`, `.partial`, `.part`, `._COPYING_`)
//! are ignored until they are renamed into place, and a file is handed out
//! only after its size and modification time stayed the same for the settle
//! time, so a file that is still growing is never read. Files come out
//! oldest first (modification time, then name).

use std::collections::HashMap;
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

/// Scans a drop folder and tells which files are complete.
pub struct DropFolder {
    dir: PathBuf,
    pattern: glob::Pattern,
    settle: Duration,
    /// Name to (size, mtime, unchanged since, handed out as ready).
    seen: HashMap<String, (u64, i128, Instant, bool)>,
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
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every matching, non-temporary regular file, oldest first.
    pub fn list(&self) -> std::io::Result<Vec<DroppedFile>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temporary(&name) || !self.pattern.matches(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push(DroppedFile {
                path: entry.path(),
                name,
                size: meta.len(),
                mtime_ns: meta.modified().map(mtime_ns).unwrap_or(0),
            });
        }
        out.sort_by(|a, b| (a.mtime_ns, &a.name).cmp(&(b.mtime_ns, &b.name)));
        Ok(out)
    }

    /// The files whose size and modification time have not changed for the
    /// settle time, as of `now`. Call repeatedly; a file changes → its clock restarts.
    pub fn ready(&mut self, now: Instant) -> std::io::Result<Vec<DroppedFile>> {
        let files = self.list()?;
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
