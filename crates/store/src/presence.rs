//! One process per replica name on a shared history.
//!
//! A replica's name (`DQMON_REPLICA`) keys what it writes to the shared
//! store: its notification inbox (`notify/inbox/<name>/<seq>`), the
//! `writer` of its manifests (whose repairs after a crash are its own),
//! the notification lease it holds. Two processes started with one name
//! (a copied config, two Deployments) would both hold that lease, and the
//! inbox entries of one would silently replace none of the other's: the
//! second of two entries with the same position is dropped by the
//! create-if-absent. So a `run` on a shared history takes its name first,
//! and keeps it with a heartbeat:
//!
//! ```text
//!  replicas/<name>/<version>.json   { instance, at_ms, released }
//!
//!  start:  newest version absent, released, or older than TTL ──► write next
//!          else watch it for TTL: it moved ──► refuse (another process has the name)
//!                                 it stood still ──► write next (the last owner died)
//!  every HEARTBEAT: write next version (create-if-absent): taken ──► stop
//!  clean stop: write next version, released
//! ```
//!
//! Versions are written create-if-absent, as the fleet's notification
//! state is: of two processes that read the same version, one writes the
//! next and the other learns that the name is in use. Nothing else is
//! needed from the store (no `If-Match`, no lock service). A restart after
//! a crash waits until the dead process's last heartbeat is [`TTL_MS`] old
//! (at most that long); a restart after a clean stop does not wait.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Put};

/// How often a running process writes its heartbeat.
pub const HEARTBEAT_MS: i64 = 5_000;
/// How long a name stays taken after its last heartbeat.
pub const TTL_MS: i64 = 3 * HEARTBEAT_MS;
/// Versions kept behind the newest.
const KEEP: u64 = 8;

/// One version of a name's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    /// The process that wrote it (random per start).
    pub instance: String,
    /// When (the writer's clock, ms since the epoch).
    pub at_ms: i64,
    /// Written by a process that stopped cleanly: the name is free.
    #[serde(default)]
    pub released: bool,
}

/// The name could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error(
        "the replica name `{name}` is in use by another running process (instance {instance}, heartbeat {age_ms} ms ago on its clock); give every replica its own DQMON_REPLICA (a StatefulSet pod's name is unique)"
    )]
    InUse {
        name: String,
        instance: String,
        age_ms: i64,
    },
    #[error(
        "another process took the replica name `{name}` (instance {instance}) while this one ran; this one stops so that only one writes as `{name}`"
    )]
    Taken { name: String, instance: String },
    #[error("could not read or write the replica record {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the replica record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

/// This process's hold on its replica name.
#[derive(Debug)]
pub struct Presence {
    name: String,
    instance: String,
    /// The version this process wrote last.
    version: u64,
}

fn prefix(name: &str) -> String {
    format!("replicas/{name}")
}

fn key(name: &str, version: u64) -> String {
    format!("replicas/{name}/{version:020}.json")
}

/// The newest version of a name's record, if any.
fn newest(objects: &dyn Backend, name: &str) -> Result<Option<(u64, Beat)>, PresenceError> {
    let dir = prefix(name);
    // a version read after the listing may have been pruned behind a newer
    // one in between: list again (a pruner is at least KEEP versions ahead)
    for _ in 0..3 {
        let keys = objects.list(&dir).map_err(|source| PresenceError::Io {
            key: dir.clone(),
            source,
        })?;
        let Some((version, k)) = keys
            .iter()
            .filter_map(|k| {
                let n = k.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()?;
                Some((n, k))
            })
            .max_by_key(|(n, _)| *n)
        else {
            return Ok(None);
        };
        let bytes = objects.get(k).map_err(|source| PresenceError::Io {
            key: k.clone(),
            source,
        })?;
        if let Some(bytes) = bytes {
            let beat = serde_json::from_slice(&bytes).map_err(|e| PresenceError::Corrupt {
                key: k.clone(),
                reason: e.to_string(),
            })?;
            return Ok(Some((version, beat)));
        }
    }
    Err(PresenceError::Corrupt {
        key: dir,
        reason: "its newest version vanished three times between listing and reading".into(),
    })
}

impl Presence {
    /// Take the replica name `name` as the process `instance` (see the
    /// module docs). `now_ms` is this machine's clock; `sleep` waits (the
    /// daemon sleeps; tests move a clock). Waits at most [`TTL_MS`].
    pub fn take(
        objects: &dyn Backend,
        name: &str,
        instance: &str,
        now_ms: &dyn Fn() -> i64,
        sleep: &dyn Fn(Duration),
    ) -> Result<Presence, PresenceError> {
        let seen = newest(objects, name)?;
        let next = match &seen {
            None => 0,
            Some((v, beat)) if beat.released || now_ms() - beat.at_ms > TTL_MS => v + 1,
            Some((v, beat)) => {
                tracing::warn!(replica = name, instance = %beat.instance, "the replica name was in use moments ago: waiting to see whether its process is alive");
                sleep(Duration::from_millis(TTL_MS as u64));
                match newest(objects, name)? {
                    Some((now_v, now_beat)) if now_v != *v && !now_beat.released => {
                        return Err(PresenceError::InUse {
                            name: name.to_string(),
                            instance: now_beat.instance,
                            age_ms: now_ms() - now_beat.at_ms,
                        });
                    }
                    Some((now_v, _)) => now_v + 1,
                    None => v + 1,
                }
            }
        };
        let mut p = Presence {
            name: name.to_string(),
            instance: instance.to_string(),
            version: next,
        };
        match p.write(objects, next, now_ms(), false) {
            Ok(()) => Ok(p),
            // another process started with the name at the same moment
            Err(PresenceError::Taken { name, instance }) => Err(PresenceError::InUse {
                name,
                instance,
                age_ms: 0,
            }),
            Err(e) => Err(e),
        }
    }

    /// Write the next heartbeat; an error when another process wrote it
    /// first (it took the name).
    pub fn beat(&mut self, objects: &dyn Backend, now_ms: i64) -> Result<(), PresenceError> {
        self.write(objects, self.version + 1, now_ms, false)
    }

    /// Free the name (a clean stop): the next process with it starts at once.
    pub fn release(mut self, objects: &dyn Backend, now_ms: i64) -> Result<(), PresenceError> {
        self.write(objects, self.version + 1, now_ms, true)
    }

    fn write(
        &mut self,
        objects: &dyn Backend,
        version: u64,
        at_ms: i64,
        released: bool,
    ) -> Result<(), PresenceError> {
        let k = key(&self.name, version);
        let beat = Beat {
            instance: self.instance.clone(),
            at_ms,
            released,
        };
        let body = serde_json::to_vec(&beat).expect("beats serialize");
        let put = objects
            .put_if_absent(&k, &body)
            .map_err(|source| PresenceError::Io {
                key: k.clone(),
                source,
            })?;
        if put == Put::Existed {
            // this process's own write, if a retried request found the
            // version its first attempt had written
            let held = objects
                .get(&k)
                .map_err(|source| PresenceError::Io {
                    key: k.clone(),
                    source,
                })?
                .and_then(|b| serde_json::from_slice::<Beat>(&b).ok());
            if held.as_ref().is_none_or(|b| b.instance != self.instance) {
                let other = newest(objects, &self.name)?
                    .map(|(_, b)| b.instance)
                    .unwrap_or_default();
                return Err(PresenceError::Taken {
                    name: self.name.clone(),
                    instance: other,
                });
            }
        }
        self.version = version;
        if version >= KEEP {
            // best effort: an old version left behind costs a listing entry
            let _ = objects.delete(&key(&self.name, version - KEEP));
        }
        Ok(())
    }
}

/// A held name, kept by a heartbeat thread: what a live run holds while
/// its shared history is open. [`Keeper::check`] says whether the name is
/// still this process's; dropped, it stops beating and releases the name
/// (unless another process took it).
#[derive(Debug)]
pub struct Keeper {
    state: std::sync::Arc<std::sync::Mutex<KeeperState>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct KeeperState {
    presence: Option<Presence>,
    /// Why the name is no longer this process's.
    lost: Option<String>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Keeper {
    /// Take `name` on `objects` (waiting as [`Presence::take`] does) and
    /// beat every [`HEARTBEAT_MS`] on a thread of its own.
    pub fn start(objects: Box<dyn Backend>, name: &str) -> Result<Keeper, PresenceError> {
        let instance = format!("{:016x}", rand_instance());
        let presence = Presence::take(objects.as_ref(), name, &instance, &now_ms, &|d| {
            std::thread::sleep(d)
        })?;
        tracing::info!(replica = name, instance = %instance, "took the replica name on the shared history");
        let state = std::sync::Arc::new(std::sync::Mutex::new(KeeperState {
            presence: Some(presence),
            lost: None,
        }));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("presence-{name}"))
            .spawn(move || {
                let every = Duration::from_millis(HEARTBEAT_MS as u64);
                // a closed channel (the keeper dropped) or a message stops it
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(p) = s.presence.as_mut() else { break };
                    match p.beat(objects.as_ref(), now_ms()) {
                        Ok(()) => {}
                        Err(e @ PresenceError::Taken { .. }) => {
                            tracing::error!("{e}");
                            s.lost = Some(e.to_string());
                            s.presence = None;
                            break;
                        }
                        // a store that does not answer: try again next time
                        // (the name lapses after TTL_MS without a beat)
                        Err(e) => tracing::warn!("replica heartbeat not written: {e}"),
                    }
                }
                let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(p) = s.presence.take()
                    && let Err(e) = p.release(objects.as_ref(), now_ms())
                {
                    tracing::warn!(
                        "replica name not released (the next start waits for it to lapse): {e}"
                    );
                }
            })
            .expect("a thread can be spawned");
        Ok(Keeper {
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `Err` with the reason once another process took the name.
    pub fn check(&self) -> Result<(), String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &s.lost {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A random process instance id (from the operating system's generator).
fn rand_instance() -> u64 {
    use rand::TryRngCore;
    rand::rngs::OsRng.try_next_u64().unwrap_or_else(|_| {
        // no OS randomness: the clock and the pid still tell two processes apart
        now_ms() as u64 ^ ((std::process::id() as u64) << 40)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LocalBackend;
    use std::cell::Cell;

    struct Clock(Cell<i64>);

    impl Clock {
        fn now(&self) -> i64 {
            self.0.get()
        }
        fn sleep(&self, d: Duration) {
            self.0.set(self.0.get() + d.as_millis() as i64);
        }
    }

    #[test]
    fn a_name_is_taken_kept_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path());
        let clock = Clock(Cell::new(1_000_000));
        let mut a =
            Presence::take(&store, "r1", "a", &|| clock.now(), &|d| clock.sleep(d)).unwrap();
        for _ in 0..12 {
            clock.sleep(Duration::from_millis(HEARTBEAT_MS as u64));
            a.beat(&store, clock.now()).unwrap();
        }
        // old versions are pruned
        assert_eq!(store.list("replicas/r1").unwrap().len(), KEEP as usize);
        // another name is another record
        Presence::take(&store, "r2", "x", &|| clock.now(), &|d| clock.sleep(d)).unwrap();
        a.release(&store, clock.now()).unwrap();
        // released: the next process starts without waiting
        let before = clock.now();
        Presence::take(&store, "r1", "b", &|| clock.now(), &|d| clock.sleep(d)).unwrap();
        assert_eq!(clock.now(), before);
    }

    #[test]
    fn a_retried_write_of_its_own_is_not_a_lost_name_but_another_process_write_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path());
        let clock = Clock(Cell::new(1_000_000));
        let mut a =
            Presence::take(&store, "r1", "a", &|| clock.now(), &|d| clock.sleep(d)).unwrap();
        // the first attempt of a's next beat reached the store, its answer did not
        let beat = Beat {
            instance: "a".into(),
            at_ms: clock.now(),
            released: false,
        };
        store
            .put(&key("r1", 1), &serde_json::to_vec(&beat).unwrap())
            .unwrap();
        a.beat(&store, clock.now()).unwrap();
        a.beat(&store, clock.now()).unwrap();
        assert_eq!(store.list("replicas/r1").unwrap().len(), 3);
        // another process writing a version a wrote learns the name is taken
        let mut b = Presence {
            name: "r1".into(),
            instance: "b".into(),
            version: 0,
        };
        let err = b.write(&store, 2, clock.now(), false).unwrap_err();
        assert!(matches!(err, PresenceError::Taken { .. }), "{err}");
    }

    #[test]
    fn a_second_process_with_a_live_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path());
        let clock = Clock(Cell::new(1_000_000));
        let a = std::cell::RefCell::new(
            Presence::take(&store, "r1", "a", &|| clock.now(), &|d| clock.sleep(d)).unwrap(),
        );
        // while b watches, a keeps beating
        let err = Presence::take(&store, "r1", "b", &|| clock.now(), &|d| {
            clock.sleep(d);
            a.borrow_mut().beat(&store, clock.now()).unwrap();
        })
        .unwrap_err();
        assert!(
            matches!(&err, PresenceError::InUse { name, instance, .. } if name == "r1" && instance == "a"),
            "{err}"
        );
        assert!(err.to_string().contains("DQMON_REPLICA"), "{err}");
        // a keeps its name
        a.borrow_mut().beat(&store, clock.now()).unwrap();
    }

    #[test]
    fn a_restart_after_a_crash_waits_for_the_dead_process_heartbeat_to_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::new(dir.path());
        let clock = Clock(Cell::new(1_000_000));
        let mut dead =
            Presence::take(&store, "r1", "a", &|| clock.now(), &|d| clock.sleep(d)).unwrap();
        // a long-dead process: no wait
        clock.sleep(Duration::from_millis(TTL_MS as u64 + 1));
        let before = clock.now();
        let mut b =
            Presence::take(&store, "r1", "b", &|| clock.now(), &|d| clock.sleep(d)).unwrap();
        assert_eq!(clock.now(), before);
        // the old process, had it survived, learns it lost the name
        let err = dead.beat(&store, clock.now()).unwrap_err();
        assert!(
            matches!(&err, PresenceError::Taken { instance, .. } if instance == "b"),
            "{err}"
        );
        // b is killed right after a heartbeat; c waits one TTL, then takes it
        b.beat(&store, clock.now()).unwrap();
        let before = clock.now();
        Presence::take(&store, "r1", "c", &|| clock.now(), &|d| clock.sleep(d)).unwrap();
        assert_eq!(clock.now() - before, TTL_MS);
    }
}
