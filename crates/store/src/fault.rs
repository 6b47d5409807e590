//! Write faults injected into the real binary, for the fault tests
//! (`tests/integration/faults.rs`). Compiled in only with the cargo feature
//! `fault-injection`, which the test suite turns on; in every other build
//! [`check`] is an empty inline function.
//!
//! With the feature on, `DQMON_FAULT_FILE` names a file of rules, one per
//! line, `<fault> <path part>`:
//!
//! | fault       | error          | as when                         |
//! |-------------|----------------|---------------------------------|
//! | `full`      | ENOSPC (28)    | the disk is full                |
//! | `read-only` | EROFS (30)     | the state folder is read-only   |
//! | `io`        | EIO (5)        | the device fails mid-write      |
//!
//! Every write of state asks [`check`] with the path it writes, at the
//! point where the fault would strike: a new file after half of its bytes
//! are in its temporary file, an appended line after half of it is written.
//! A rule applies to every path that contains its part (`/` matches every
//! path), for as long as it is in the file: the test clears the fault by
//! emptying or removing the file, while dqmon runs or between runs.
//!
//! With the feature on, `DQMON_TEST_PACK_SIZE` also sets the manifests per
//! pack of a shared history ([`pack_size`]), so that the fleet tests' few
//! batches per replica fill packs and their summaries.

use std::io;
use std::path::Path;

/// Where a write of `len` bytes is split so that an injected fault strikes
/// mid-write: half-way with the feature, nowhere (one write) without it.
#[inline(always)]
pub fn split_point(len: usize) -> usize {
    if cfg!(feature = "fault-injection") {
        len / 2
    } else {
        len
    }
}

/// What a state write does to its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Writes bytes (a new file, an appended line, a lock file).
    Write,
    /// Removes or renames away a file: a full disk allows it, a read-only
    /// folder does not.
    Remove,
}

/// Fail with the injected error if a rule in `DQMON_FAULT_FILE` covers
/// `path` for this operation.
#[cfg(feature = "fault-injection")]
pub fn check(path: &Path, op: Op) -> io::Result<()> {
    let Some(rules) = std::env::var_os("DQMON_FAULT_FILE") else {
        return Ok(());
    };
    let text = match std::fs::read_to_string(&rules) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let target = path.to_string_lossy();
    for line in text.lines() {
        let Some((fault, part)) = line.trim().split_once(' ') else {
            continue;
        };
        if !target.contains(part.trim()) {
            continue;
        }
        let errno = match fault {
            "full" if op == Op::Remove => continue,
            "full" => 28,
            "read-only" => 30,
            "io" => 5,
            other => {
                return Err(io::Error::other(format!(
                    "DQMON_FAULT_FILE: unknown fault `{other}` (full, read-only, io)"
                )));
            }
        };
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(())
}

/// Without the `fault-injection` feature nothing is ever injected.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn check(_path: &Path, _op: Op) -> io::Result<()> {
    Ok(())
}

/// Manifests per pack set by `DQMON_TEST_PACK_SIZE` (a positive number),
/// for the tests of the real binary.
#[cfg(feature = "fault-injection")]
pub fn pack_size() -> Option<usize> {
    std::env::var("DQMON_TEST_PACK_SIZE")
        .ok()?
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

/// Without the `fault-injection` feature packs hold
/// [`crate::history::PACK_SIZE`] manifests.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn pack_size() -> Option<usize> {
    None
}
