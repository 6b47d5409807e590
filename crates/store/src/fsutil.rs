//! Durable file writes: temp file in the same folder, fsync, rename, fsync
//! the folder. A reader sees the old bytes or the new bytes, never a mix,
//! and a crash after return cannot lose the write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::fault;

/// Write `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// Like [`write_atomic`], with Unix permissions `mode` for a new file.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, tmp) = write_temp(path, bytes, mode)?;
    fs::rename(&tmp, path)?;
    sync_dir(&dir)
}

/// Write `bytes` to `path` only if no file is there, atomically and
/// durably: returns `false`, changing nothing, when one is. Of several
/// writers racing for one path, exactly one gets `true` (a hard link of a
/// complete temporary file, which the file system refuses over an existing
/// name). The create-if-absent of [`crate::backend::Backend::put_if_absent`].
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let (dir, tmp) = write_temp(path, bytes, 0o644)?;
    let linked = fs::hard_link(&tmp, path);
    let removed = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            removed?;
            sync_dir(&dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            removed?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// A complete, synced temporary file beside `path` holding `bytes`; returns
/// its folder and its name. Its name has the shape [`temp_target`] knows,
/// unique within the process (a counter after the pid), so that writers in
/// several threads never share one.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> io::Result<(PathBuf, PathBuf)> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    loop {
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".{}.{}{seq:04}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = match opts.open(&tmp) {
            Ok(f) => f,
            // a file of a killed writer with the same name: take the next
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let written = write_all_faultable(&mut f, path, bytes).and_then(|_| f.sync_all());
        if let Err(e) = written {
            // a full disk or a failing device: leave no half file behind
            drop(f);
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        return Ok((dir, tmp));
    }
}

/// The file a temporary name of [`write_atomic`] stands for:
/// `.<name>.<pid>.tmp` gives `name`. Such a file outlives its write only when
/// the writer was killed between writing it and renaming it into place.
pub fn temp_target(file_name: &str) -> Option<&str> {
    let rest = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (name, pid) = rest.rsplit_once('.')?;
    let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    (is_pid && !name.is_empty()).then_some(name)
}

/// Remove the temporary files of [`write_atomic`] in `dir` (not in its
/// subfolders) whose target `owned` accepts; returns the paths removed. A
/// missing folder has none. Call it only where nobody else can be writing
/// them: under the writer lock of the state folder
/// ([`super::lock::WriterLock::remove_temp_files`]) or the audit lock.
pub fn remove_temp_files(dir: &Path, owned: impl Fn(&str) -> bool) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(target) = name.to_str().and_then(temp_target) else {
            continue;
        };
        if owned(target) && entry.file_type()?.is_file() {
            let path = entry.path();
            fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Remove a file and fsync its folder, so the removal survives a crash (a
/// file already gone is fine: removals are retried after a restart).
pub fn remove_durable(path: &Path) -> io::Result<()> {
    fault::check(path, fault::Op::Remove)?;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// fsync a folder so that renames and new entries in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `write_all` of state bytes meant for `path`, where an injected fault
/// (see [`fault`]) strikes mid-write; without the test-only feature it is
/// one plain `write_all`.
pub fn write_all_faultable(f: &mut impl Write, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (first, rest) = bytes.split_at(fault::split_point(bytes.len()));
    f.write_all(first)?;
    fault::check(path, fault::Op::Write)?;
    f.write_all(rest)
}

/// Append one line to a file and fsync it (for JSON-lines logs).
pub fn append_line(path: &Path, line: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line);
    buf.push(b'\n');
    append_lines(path, &buf)
}

/// Append whole lines (`bytes` ends with a newline) to a file and fsync it.
/// A write that fails part-way (a full disk) is cut back, so the file never
/// keeps half a line while its writer runs on; a crash mid-write can still
/// leave one, which the readers of these logs cut when they open them.
pub fn append_lines(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let len = f.metadata()?.len();
    let written = write_all_faultable(&mut f, path, bytes).and_then(|_| f.sync_data());
    if let Err(e) = written {
        let _ = f.set_len(len).and_then(|_| f.sync_data());
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn write_new_writes_once_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("batch.json");
        assert!(write_new(&p, b"first").unwrap());
        assert!(!write_new(&p, b"second").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"first");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["batch.json"]);
    }

    #[test]
    fn temp_names_are_recognised_by_their_shape_only() {
        assert_eq!(
            temp_target(".checkpoint.json.4242.tmp"),
            Some("checkpoint.json")
        );
        assert_eq!(temp_target(".pii.key.1.tmp"), Some("pii.key"));
        for not in [
            "checkpoint.json.4242.tmp",
            ".x.tmp",
            "..4242.tmp",
            ".a.12ab.tmp",
            ".a.4242.tmp.reason",
            ".dqmon-ready-probe123",
        ] {
            assert_eq!(temp_target(not), None, "{not}");
        }
    }
}
