//! One writer per state folder.
//!
//! A dataset's state folder (history, alerts, checkpoint, quarantine,
//! outbox, PII key) has one writer at a time: whoever writes it holds an
//! exclusive lock on `<state folder>/.lock`, a file holding the holder's
//! process id. A second writer (another `dqmon run`, a `replay --state-dir`
//! pointed at the same folder) fails at once with [`LockError::Held`], which
//! names the folder and that pid. Readers (`query`, `report`, `audit
//! verify`, `profile`, `compare`) take no lock; they read files that writers
//! only ever replace atomically or append to.
//!
//! The lock is an advisory `flock` (through `fs4`): the kernel releases it
//! when the holder exits, however it exits, so a SIGKILL never leaves a
//! folder locked; the pid left in the file then means nothing and is
//! overwritten by the next holder. Within one process the lock is shared:
//! acquiring a folder this process already holds returns another handle to
//! the same hold (the daemon holds its folders for its whole life while its
//! workers come and go on a reload), and the lock is released when the last
//! handle is dropped.
//!
//! Holding the lock is also what makes it safe to remove the temporary
//! files a killed writer left behind ([`WriterLock::remove_temp_files`]):
//! nobody else can be writing them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::fsutil;

/// The lock file's name inside a state folder.
pub const LOCK_FILE: &str = ".lock";

/// The folders of a state folder that only its writer writes (relative to
/// it; `""` is the folder itself), where a killed writer may have left
/// temporary files. `audit.head` is the exception in the folder itself: the
/// audit log rewrites it under its own lock, for CLI commands too, and
/// removes its leftovers itself (see [`super::audit::AuditLog::open`]).
/// Not here: the baselines folder (`baseline build` and `approve` write it
/// beside a running daemon) and a replay's folder (a state folder of its own,
/// with its own lock).
const WRITER_FOLDERS: &[&str] = &[
    "",
    "history/batches",
    "history/profiles",
    "history/metrics",
    "history/streams",
    "quarantine",
    "outbox",
    "outbox/inbox",
    "outbox/pending",
    "outbox/sent",
    "outbox/failed",
];

/// The state folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the state folder {dir} is in use by another dqmon writer (pid {pid}, recorded in {lock}): one process at a time may write it. Stop that process first, or give this command a state folder of its own (for a replay: another --state-dir)"
    )]
    Held {
        dir: PathBuf,
        lock: PathBuf,
        /// The holder's pid as its lock file says it (`unknown` when unreadable).
        pid: String,
    },
    #[error("could not lock the state folder {dir} ({lock}): {source}; check that it is writable")]
    Io {
        dir: PathBuf,
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lock of one state folder, held by this process.
struct Hold {
    /// The folder as it was first named (for messages and paths).
    dir: PathBuf,
    /// The folder, canonical (to recognise it under another name).
    canonical: PathBuf,
    /// Open for the life of the hold: closing it releases the lock.
    _file: File,
}

/// Folders this process holds, so that acquiring one again shares the hold.
static HELD: Mutex<Vec<Weak<Hold>>> = Mutex::new(Vec::new());

/// An exclusive hold on a state folder: while any clone of it lives, no
/// other process can acquire the folder.
#[derive(Clone)]
pub struct WriterLock {
    hold: Arc<Hold>,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLock")
            .field("dir", &self.hold.dir)
            .finish()
    }
}

impl WriterLock {
    /// Lock `dir` (created if absent) for writing, or fail at once when
    /// another process holds it.
    pub fn acquire(dir: &Path) -> Result<WriterLock, LockError> {
        let lock = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            lock: lock.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let canonical = dir.canonicalize().map_err(io)?;
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|w| w.strong_count() > 0);
        if let Some(hold) = held
            .iter()
            .filter_map(Weak::upgrade)
            .find(|h| h.canonical == canonical)
        {
            return Ok(WriterLock { hold });
        }
        super::fault::check(&lock, super::fault::Op::Write).map_err(io)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock)
            .map_err(io)?;
        if !fs4::fs_std::FileExt::try_lock_exclusive(&file).map_err(io)? {
            let mut text = String::new();
            let pid = match file.read_to_string(&mut text) {
                Ok(_) if !text.trim().is_empty() => text.trim().to_string(),
                _ => "unknown".to_string(),
            };
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                lock,
                pid,
            });
        }
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|_| file.sync_data())
            .map_err(io)?;
        let hold = Arc::new(Hold {
            dir: dir.to_path_buf(),
            canonical,
            _file: file,
        });
        held.push(Arc::downgrade(&hold));
        Ok(WriterLock { hold })
    }

    /// The locked folder, as it was named when first acquired.
    pub fn dir(&self) -> &Path {
        &self.hold.dir
    }

    /// Whether this lock is the one of `dir`.
    pub fn covers(&self, dir: &Path) -> bool {
        dir.canonicalize().is_ok_and(|c| c == self.hold.canonical)
    }

    /// Remove the temporary files of atomic writes (see
    /// [`fsutil::temp_target`]) that a killed writer left in the folders
    /// only the writer writes; returns what was removed. Safe only because
    /// this lock is held: no other process is writing them.
    pub fn remove_temp_files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for sub in WRITER_FOLDERS {
            let dir = self.hold.dir.join(sub);
            let owned = |target: &str| !sub.is_empty() || target != super::audit::HEAD_FILE;
            removed.extend(fsutil::remove_temp_files(&dir, owned)?);
        }
        // one folder per input stream (see `history`)
        let streams = self.hold.dir.join("history/streams");
        if let Ok(entries) = std::fs::read_dir(&streams) {
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    removed.extend(fsutil::remove_temp_files(&entry.path(), |_| true)?);
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_is_shared_in_process_and_released_with_the_last_handle() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/d");
        let a = WriterLock::acquire(&state).unwrap();
        let pid = std::fs::read_to_string(state.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // the same folder under another name: the same hold
        let b = WriterLock::acquire(&dir.path().join("state/./d")).unwrap();
        assert!(Arc::ptr_eq(&a.hold, &b.hold));
        assert!(b.covers(&state));
        drop(a);
        drop(b);
        assert!(HELD.lock().unwrap().iter().all(|w| {
            w.upgrade()
                .is_none_or(|h| h.canonical != state.canonicalize().unwrap())
        }));
        // released: a new open file can take it
        let f = File::open(state.join(LOCK_FILE)).unwrap();
        assert!(fs4::fs_std::FileExt::try_lock_exclusive(&f).unwrap());
    }

    #[test]
    fn another_holder_is_named_with_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        // another process's hold: an open file with the lock and its pid
        let other = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&lock)
            .unwrap();
        assert!(fs4::fs_std::FileExt::try_lock_exclusive(&other).unwrap());
        std::fs::write(&lock, "4242\n").unwrap();
        let err = WriterLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, LockError::Held { ref pid, .. } if pid == "4242"),
            "{text}"
        );
        assert!(text.contains("pid 4242"), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert_eq!(
            std::fs::read_to_string(&lock).unwrap(),
            "4242\n",
            "the holder's pid stays"
        );
    }

    #[test]
    fn temp_files_go_and_everything_else_stays() {
        let dir = tempfile::tempdir().unwrap();
        let lock = WriterLock::acquire(dir.path()).unwrap();
        let temps = [
            ".checkpoint.json.77.tmp",
            ".pii.key.77.tmp",
            "history/batches/.abc.json.77.tmp",
            "outbox/pending/.m.json.77.tmp",
        ];
        let keep = [
            "checkpoint.json",
            ".audit.head.77.tmp",
            ".x.tmp",
            ".a.b.tmp",
            "history/batches/abc.json",
            "baselines/.b.json.77.tmp",
            "replay/.checkpoint.json.77.tmp",
        ];
        for p in temps.iter().chain(&keep) {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let mut removed = lock.remove_temp_files().unwrap();
        removed.sort();
        let mut want: Vec<PathBuf> = temps.iter().map(|p| dir.path().join(p)).collect();
        want.sort();
        assert_eq!(removed, want);
        for p in keep {
            assert!(dir.path().join(p).exists(), "{p}");
        }
    }
}
