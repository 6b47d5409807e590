//! The fleet's one alert stream on a shared folder (the local backend keeps
//! the object stores' contract, `store::backend::conformance`), on a
//! manual clock: one holder plans once for every replica, a successor sends
//! what a dead holder left, a holder that lost the lease writes nothing,
//! and the lifecycle (cooldown counts, summary) goes on across holders.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::alert::clock::{Clock, ManualClock};
use crate::alert::deliver::Notifier;
use crate::alert::deliver::tests::{alert, lines, summary, wait_for};
use crate::alert::lifecycle::NoticeKind;
use crate::config::model::Receiver;
use crate::store::backend::LocalBackend;

const T: i64 = 1_700_000_000_000;

pub(crate) fn rules(out: &Path) -> AlertRules {
    let mut rules = AlertRules {
        cooldown_secs: 3600,
        resolve_after_batches: 3,
        ..AlertRules::default()
    };
    rules.receivers.insert(
        "log".into(),
        Receiver::File {
            path: out.to_path_buf(),
        },
    );
    rules.default_route = vec!["log".into()];
    rules
}

pub(crate) fn shared() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("shared")));
    (dir, objects)
}

/// A replica's notifier: state folder `<dir>/<name>`, on the shared store.
pub(crate) fn replica(
    dir: &Path,
    name: &str,
    rules: &AlertRules,
    clock: &ManualClock,
    objects: &Arc<dyn Backend>,
) -> Notifier {
    Notifier::start(
        "d",
        &dir.join(name),
        rules.clone(),
        &[],
        Arc::new(clock.clone()),
        Some(FleetInbox::new(name, objects.clone())),
    )
    .unwrap()
}

fn batch(seq: u64, id: &str) -> InboxBatch {
    InboxBatch {
        seq,
        batch_id: id.into(),
        alerts: vec![alert(id)],
    }
}

fn ids(ms: &[Message]) -> Vec<&str> {
    ms.iter().map(|m| m.id.as_str()).collect()
}

fn sent(ms: &[Message]) -> Vec<Message> {
    ms.iter()
        .cloned()
        .map(|mut m| {
            m.status = MessageStatus::Sent;
            m
        })
        .collect()
}

#[test]
fn one_holder_plans_once_for_the_fleet_and_its_successor_sends_what_it_left() {
    let (dir, objects) = shared();
    let r = rules(&dir.path().join("out.jsonl"));
    let (ia, ib) = (
        FleetInbox::new("a", objects.clone()),
        FleetInbox::new("b", objects.clone()),
    );
    let (mut a, mut b) = (ia.fleet(), ib.fleet());
    assert!(a.step(&r, T).unwrap(), "the first replica takes the lease");
    assert!(!b.step(&r, T).unwrap());
    // both replicas commit a batch alerting the same fingerprint
    ia.put(&batch(0, "a0")).unwrap();
    ib.put(&batch(0, "b0")).unwrap();
    a.poke();
    assert!(a.step(&r, T + 10).unwrap());
    let due = a.due(T + 10);
    assert_eq!(due.len(), 1, "one trigger for the fleet: {due:#?}");
    assert_eq!(due[0].notice.kind, NoticeKind::Trigger);
    assert!(a.may_deliver(T + 10));
    for w in ["a", "b"] {
        let left = objects.list(&format!("notify/inbox/{w}")).unwrap();
        assert!(left.is_empty(), "taken-in entries are removed: {left:?}");
    }
    // a follower neither plans nor delivers while the lease runs
    assert!(!b.step(&r, T + 20).unwrap());
    assert!(b.due(T + 20).is_empty() && !b.may_deliver(T + 20));
    assert!(!b.step(&r, T + LEASE_MS / 2).unwrap());
    // a dies before delivering; once its lease runs out, b finds the
    // message pending (once) and sends it
    drop(a);
    let t2 = T + 10 + LEASE_MS + 1;
    assert!(b.step(&r, t2).unwrap(), "b takes the lease over");
    assert_eq!(ids(&b.due(t2)), ids(&due));
    assert!(b.settle(&sent(&b.due(t2)), t2).unwrap());
    assert!(b.due(t2).is_empty() && b.pending() == 0);
    // a comes back: b holds; a's next alert of the fingerprint, within
    // the cooldown, is counted by b, not sent
    let mut a = ia.fleet();
    ia.put(&batch(1, "a1")).unwrap();
    assert!(!a.step(&r, t2 + 100).unwrap());
    b.poke();
    assert!(b.step(&r, t2 + 200).unwrap());
    assert!(b.due(t2 + 200).is_empty());
    let (_, state) = latest(&*objects).unwrap().unwrap();
    assert_eq!(state.holder, "b");
    assert_eq!(
        state.cursors,
        BTreeMap::from([("a".into(), 1), ("b".into(), 0)])
    );
    let episode = state.lifecycle.open.values().next().expect("open episode");
    assert_eq!(episode.suppressed, 2, "b0 and a1 repeat a0's fingerprint");
}

#[test]
fn a_holder_that_lost_the_lease_writes_nothing_and_sends_nothing() {
    let (dir, objects) = shared();
    let r = rules(&dir.path().join("out.jsonl"));
    let (ia, ib) = (
        FleetInbox::new("a", objects.clone()),
        FleetInbox::new("b", objects.clone()),
    );
    let (mut a, mut b) = (ia.fleet(), ib.fleet());
    assert!(a.step(&r, T).unwrap());
    assert!(!b.step(&r, T).unwrap());
    // a stalls past its lease; b takes over
    let late = T + LEASE_MS + 1;
    assert!(b.step(&r, late).unwrap());
    // a wakes up still believing it holds the lease, with work to do
    ia.put(&batch(0, "a0")).unwrap();
    a.poke();
    assert!(!a.step(&r, late + 1).unwrap(), "its write loses");
    assert!(a.due(late + 1).is_empty() && !a.may_deliver(late + 1));
    // the entry it read stays for b, which plans it
    assert_eq!(objects.list("notify/inbox/a").unwrap().len(), 1);
    b.poke();
    assert!(b.step(&r, late + 2).unwrap());
    assert_eq!(b.due(late + 2).len(), 1);
    assert_eq!(latest(&*objects).unwrap().unwrap().1.holder, "b");
}

#[test]
fn a_released_lease_is_taken_over_without_waiting_for_it_to_run_out() {
    let (dir, objects) = shared();
    let r = rules(&dir.path().join("out.jsonl"));
    let mut a = FleetInbox::new("a", objects.clone()).fleet();
    let mut b = FleetInbox::new("b", objects.clone()).fleet();
    assert!(a.step(&r, T).unwrap());
    assert!(!b.step(&r, T + 1).unwrap());
    a.release(T + 2).unwrap();
    assert!(b.step(&r, T + 1 + FOLLOW_MS).unwrap());
    const { assert!(FOLLOW_MS + 1 < LEASE_MS) };
    assert!(!a.step(&r, T + 2 + FOLLOW_MS).unwrap());
}

#[test]
fn old_state_versions_are_pruned() {
    let (dir, objects) = shared();
    let r = rules(&dir.path().join("out.jsonl"));
    let ia = FleetInbox::new("a", objects.clone());
    let mut a = ia.fleet();
    for i in 0..100u64 {
        ia.put(&batch(i, &format!("a{i}"))).unwrap();
        a.poke();
        assert!(a.step(&r, T + i as i64).unwrap());
    }
    let versions = objects.list("notify/state").unwrap();
    assert!(versions.len() <= 2 * KEEP_VERSIONS as usize, "{versions:?}");
    assert_eq!(latest(&*objects).unwrap().unwrap().0, 99);
}

#[test]
fn repair_enqueues_committed_batches_missing_from_the_inbox() {
    let (_dir, objects) = shared();
    let ia = FleetInbox::new("a", objects.clone());
    let own: Vec<BatchSummary> = (0..6)
        .map(|s| summary(s, &format!("a{s}"), vec![alert(&format!("a{s}"))]))
        .collect();
    // a replica that never wrote to the inbox starts from now
    assert_eq!(ia.repair(&own).unwrap(), 0);
    // the fleet took in up to 3; 4 is in the inbox; 5 was lost to a crash
    let state = FleetState {
        holder: "b".into(),
        cursors: BTreeMap::from([("a".into(), 3)]),
        ..FleetState::default()
    };
    objects
        .put_if_absent(&state_key(0), &serde_json::to_vec(&state).unwrap())
        .unwrap();
    ia.put(&batch(4, "a4")).unwrap();
    assert_eq!(ia.repair(&own).unwrap(), 1);
    assert_eq!(
        objects.list("notify/inbox/a").unwrap(),
        vec![inbox_key("a", 4), inbox_key("a", 5)]
    );
}

/// Two replicas' delivery threads on one shared folder: a fingerprint
/// both alert six times pages once; the replica holding the lease stops,
/// and the other, taking over, sends the summary of the repeats when the
/// cooldown ends.
#[test]
fn two_replicas_page_once_and_the_summary_survives_a_handover() {
    let (dir, objects) = shared();
    let out = dir.path().join("out.jsonl");
    let r = rules(&out);
    let clock = ManualClock::new(T);
    let start = |name: &str| replica(dir.path(), name, &r, &clock, &objects);
    let mut replicas = BTreeMap::from([("a", start("a")), ("b", start("b"))]);
    for i in 0..3u64 {
        for (name, n) in &replicas {
            let id = format!("{name}{i}");
            n.enqueue(i, &id, &[alert(&id)]).unwrap();
        }
    }
    let taken_in = || {
        latest(&*objects)
            .unwrap()
            .is_some_and(|(_, s)| s.cursors.values().sum::<u64>() == 4 && s.pending.is_empty())
    };
    wait_for("every batch taken in and the trigger sent", taken_in);
    assert_eq!(lines(&out).len(), 1, "{:#?}", lines(&out));
    assert_eq!(lines(&out)[0]["kind"], "trigger");
    // the holder stops (releasing the lease); the other takes over
    let holder = latest(&*objects).unwrap().unwrap().1.holder;
    let other = if holder == "a" { "b" } else { "a" };
    replicas.remove(holder.as_str()).unwrap().stop();
    clock.advance_ms(FOLLOW_MS + 1);
    wait_for("the other replica to take the lease", || {
        latest(&*objects)
            .unwrap()
            .is_some_and(|(_, s)| s.holder == other)
    });
    // the cooldown ends: one summary of the five repeats, from the new holder
    clock.advance_ms(3600 * 1000);
    wait_for("the summary", || lines(&out).len() == 2);
    let got = lines(&out);
    assert_eq!(got[1]["kind"], "summary");
    assert_eq!(got[1]["suppressed"], 5, "{got:#?}");
    let start_ms = clock.now_ms();
    clock.advance_ms(1);
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(lines(&out).len(), 2);
    assert!(clock.now_ms() > start_ms);
    replicas.remove(other).unwrap().stop();
}

/// What the fleet's notifications cost on the store, in requests (the
/// README's capacity section quotes these counts): a replica's commit
/// writes one inbox entry; the holder's look at the inboxes costs one
/// folder listing and one listing per writer, plus a read and a delete
/// per new entry and one state version when anything moved; a follower
/// costs nothing until its look, then one listing.
#[test]
fn requests_per_batch_and_per_look() {
    use crate::store::backend::Counting;
    let dir = tempfile::tempdir().unwrap();
    let r = rules(&dir.path().join("out.jsonl"));
    let (counted, log) = Counting::new(LocalBackend::new(dir.path().join("shared")));
    let objects: Arc<dyn Backend> = Arc::new(counted);
    let kinds = || {
        let mut k: Vec<&str> = log.take().iter().map(|(kind, _)| *kind).collect();
        k.sort();
        k
    };
    let (ia, ib, ic) = (
        FleetInbox::new("a", objects.clone()),
        FleetInbox::new("b", objects.clone()),
        FleetInbox::new("c", objects.clone()),
    );
    let (mut a, mut c) = (ia.fleet(), ic.fleet());
    assert!(a.step(&r, T).unwrap());
    assert!(!c.step(&r, T).unwrap());
    kinds();
    // two writers commit four batches
    for i in 0..2 {
        ia.put(&batch(i, &format!("a{i}"))).unwrap();
        ib.put(&batch(i, &format!("b{i}"))).unwrap();
    }
    assert_eq!(kinds(), vec!["put_if_absent"; 4], "one write per batch");
    // the holder's look: 1 + 2 listings, 4 × (read + delete), 1 version
    a.poke();
    assert!(a.step(&r, T + 10).unwrap());
    let mut want = vec!["delete"; 4];
    want.extend(["get"; 4]);
    want.extend(["list_after", "list_after", "list_folders", "put_if_absent"]);
    assert_eq!(kinds(), want);
    // a look that finds nothing new writes nothing
    a.poke();
    assert!(a.step(&r, T + 20).unwrap());
    assert_eq!(kinds(), vec!["list_after", "list_after", "list_folders"]);
    // between looks, no request at all; a renewal is one write
    assert!(a.step(&r, T + 30).unwrap());
    assert!(kinds().is_empty());
    assert!(!c.step(&r, T + 30).unwrap());
    assert!(kinds().is_empty(), "a follower waits for its next look");
    assert!(!c.step(&r, T + FOLLOW_MS).unwrap());
    assert_eq!(kinds(), vec!["get", "list_after"], "the newest version");
    assert!(a.step(&r, T + 10 + LEASE_MS / 2 + 1).unwrap());
    assert_eq!(
        kinds(),
        vec!["list_after", "list_after", "list_folders", "put_if_absent"]
    );
}

/// Random schedules of three replicas on one shared folder: commits,
/// steps, sends that take up to the receiver's timeout (10 s, a webhook)
/// and now and then fail (due again later, for whoever holds the lease
/// then), crashes (before or after a send was recorded, or during one), graceful
/// stops and restarts, on a clock that jumps by up to 3 s. For every
/// schedule: no replica starts sending a message while another's send of
/// it is under way; a message is sent more than once only when a holder
/// died after sending it and before recording it (at least once); the
/// lease's state only moves forward (cursors never go back); and once every
/// replica is up again, every message is sent and nothing stays pending.
#[test]
fn random_schedules_of_crashes_and_takeovers_lose_nothing_and_double_only_after_a_crash() {
    use crate::config::model::{ConfigValue, WebhookFormat, WebhookReceiver};
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    struct Replica {
        fleet: Option<Fleet>,
        /// A send under way: its messages and when it ends.
        sending: Option<(Vec<Message>, i64)>,
    }
    #[derive(Default)]
    struct Log {
        sent: BTreeMap<String, u32>,
        unrecorded: BTreeMap<String, u32>,
        overlaps: u32,
    }
    let mut totals = (0usize, 0usize, 0usize);
    for seed in 0..60u64 {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let (dir, objects) = shared();
        let mut r = rules(&dir.path().join("out.jsonl"));
        r.cooldown_secs = 60;
        r.receivers.insert(
            "hook".into(),
            Receiver::Webhook(WebhookReceiver {
                url: ConfigValue::Literal("http://127.0.0.1:9/x".into()),
                format: WebhookFormat::Generic,
                headers: Vec::new(),
                routing_key: None,
                timeout_secs: 10,
            }),
        );
        r.default_route = vec!["hook".into()];
        let bound = send_bound_ms(&r);
        let names = ["a", "b", "c"];
        let inboxes: Vec<FleetInbox> = names
            .iter()
            .map(|n| FleetInbox::new(n, objects.clone()))
            .collect();
        let mut reps: Vec<Replica> = inboxes
            .iter()
            .map(|i| Replica {
                fleet: Some(i.fleet()),
                sending: None,
            })
            .collect();
        let mut seqs = [0u64; 3];
        let mut now = T;
        let mut log = Log::default();
        let mut alerted = BTreeSet::new();
        let mut cursors_seen: BTreeMap<String, u64> = BTreeMap::new();
        // a step of replica i at `now`; a send it starts ends `took` later
        let start = |reps: &mut Vec<Replica>, i: usize, now: i64, took: i64, log: &mut Log| {
            let fleet = reps[i].fleet.as_mut().unwrap();
            if !fleet.step(&r, now).unwrap() {
                return;
            }
            let due = fleet.due(now);
            if due.is_empty() || !fleet.ready_to_send(now).unwrap() {
                return;
            }
            for m in &due {
                let overlap = reps.iter().enumerate().any(|(j, o)| {
                    j != i
                        && o.sending
                            .as_ref()
                            .is_some_and(|(ms, _)| ms.iter().any(|x| x.id == m.id))
                });
                log.overlaps += overlap as u32;
            }
            reps[i].sending = Some((due, now + took));
        };
        for _ in 0..250 {
            now += rng.random_range(0..3_000);
            // sends that ended by now are recorded (or their replica dies
            // first), in the order they ended
            let mut ended: Vec<(i64, usize)> = reps
                .iter()
                .enumerate()
                .filter_map(|(i, x)| x.sending.as_ref().map(|(_, end)| (*end, i)))
                .filter(|(end, _)| *end <= now)
                .collect();
            ended.sort();
            for (end, i) in ended {
                let (due, _) = reps[i].sending.take().unwrap();
                if rng.random_bool(0.3) {
                    // the receiver failed (a timeout): due again later, and
                    // sent by whoever holds the lease then, with no new
                    // state written first to renew the lease
                    let failed: Vec<Message> = due
                        .into_iter()
                        .map(|mut m| {
                            m.attempts += 1;
                            m.next_attempt_ms = end + rng.random_range(1_000..20_000);
                            m
                        })
                        .collect();
                    let fleet = reps[i].fleet.as_mut().unwrap();
                    fleet.settle(&failed, end).unwrap();
                    continue;
                }
                for m in &due {
                    *log.sent.entry(m.id.clone()).or_default() += 1;
                }
                if rng.random_bool(0.1) {
                    for m in &due {
                        *log.unrecorded.entry(m.id.clone()).or_default() += 1;
                    }
                    reps[i].fleet = None;
                } else {
                    reps[i]
                        .fleet
                        .as_mut()
                        .unwrap()
                        .settle(&sent(&due), end)
                        .unwrap();
                }
            }
            let i = rng.random_range(0..3usize);
            let up = reps[i].fleet.is_some();
            match rng.random_range(0..10u32) {
                0 if up => {
                    let fp = rng.random_range(0..4u32);
                    let id = format!("{}{}", names[i], seqs[i]);
                    let alerts = if fp < 3 {
                        alerted.insert(fp);
                        vec![fingerprinted(&id, fp)]
                    } else {
                        Vec::new()
                    };
                    inboxes[i]
                        .put(&InboxBatch {
                            seq: seqs[i],
                            batch_id: id,
                            alerts,
                        })
                        .unwrap();
                    seqs[i] += 1;
                    reps[i].fleet.as_mut().unwrap().poke();
                }
                1..=7 if up && reps[i].sending.is_none() => {
                    // half the sends take the receiver's whole timeout
                    let took = if rng.random_bool(0.5) {
                        bound
                    } else {
                        rng.random_range(0..=bound)
                    };
                    start(&mut reps, i, now, took, &mut log);
                }
                8 if up => {
                    // dies (mid-send: sent, not recorded), or stops and
                    // hands the lease on (after its send)
                    if let Some((due, _)) = reps[i].sending.take() {
                        for m in &due {
                            *log.sent.entry(m.id.clone()).or_default() += 1;
                            *log.unrecorded.entry(m.id.clone()).or_default() += 1;
                        }
                    } else if rng.random_bool(0.5) {
                        reps[i].fleet.as_mut().unwrap().release(now).unwrap();
                    }
                    reps[i].fleet = None;
                }
                _ if !up => reps[i].fleet = Some(inboxes[i].fleet()),
                _ => {}
            }
            if let Some((_, s)) = latest(&*objects).unwrap() {
                for (w, c) in &s.cursors {
                    let before = cursors_seen.insert(w.clone(), *c).unwrap_or(0);
                    assert!(*c >= before, "seed {seed}: cursor of {w} went back");
                }
            }
        }
        // everyone up again, sends finished; time moves on until the fleet
        // has sent everything
        for (i, x) in reps.iter_mut().enumerate() {
            if let Some((due, _)) = x.sending.take() {
                for m in &due {
                    *log.sent.entry(m.id.clone()).or_default() += 1;
                }
                x.fleet.as_mut().unwrap().settle(&sent(&due), now).unwrap();
            }
            if x.fleet.is_none() {
                x.fleet = Some(inboxes[i].fleet());
            }
        }
        let mut rounds = 0;
        loop {
            now += lease_ms(&r);
            for i in 0..3 {
                reps[i].fleet.as_mut().unwrap().poke();
                start(&mut reps, i, now, 0, &mut log);
                if let Some((due, _)) = reps[i].sending.take() {
                    for m in &due {
                        *log.sent.entry(m.id.clone()).or_default() += 1;
                    }
                    reps[i]
                        .fleet
                        .as_mut()
                        .unwrap()
                        .settle(&sent(&due), now)
                        .unwrap();
                }
            }
            let (_, s) = latest(&*objects).unwrap().expect("a state");
            let taken = s.cursors.values().map(|c| c + 1).sum::<u64>();
            if s.pending.is_empty() && taken == seqs.iter().sum::<u64>() {
                break;
            }
            rounds += 1;
            assert!(rounds < 10, "seed {seed}: the fleet does not drain: {s:#?}");
        }
        assert_eq!(
            log.overlaps, 0,
            "seed {seed}: two replicas sending one message at once"
        );
        for (id, n) in &log.sent {
            let lost = log.unrecorded.get(id).copied().unwrap_or(0);
            assert!(
                *n <= 1 + lost,
                "seed {seed}: {id} sent {n} times with {lost} send(s) not recorded"
            );
        }
        assert!(
            log.sent.len() >= alerted.len(),
            "seed {seed}: every fingerprint alerted is paged: {:?} for {alerted:?}",
            log.sent
        );
        totals.0 += log.sent.values().filter(|n| **n > 1).count();
        totals.1 += log.unrecorded.len();
        totals.2 += log.sent.len();
    }
    // the schedules did exercise the cases: sends not recorded, and
    // messages sent again by a successor
    eprintln!(
        "messages {}, sends not recorded {}, sent again {}",
        totals.2, totals.1, totals.0
    );
    assert!(totals.1 > 10 && totals.0 > 0, "{totals:?}");
}

/// An alert of fingerprint number `fp` in batch `batch`.
fn fingerprinted(batch: &str, fp: u32) -> crate::alert::Alert {
    let mut a = alert(batch);
    a.fingerprint = format!("fp{fp}");
    a
}
