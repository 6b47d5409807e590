//! Pages outside any batch (a refused baseline) in a fleet: every replica
//! that refuses a baseline derives the same alert, and each would page it
//! from its own outbox. The first replica to claim the alert on the shared
//! store pages it; the others leave it.
//!
//! ```text
//!  replica a ─ refuses ─► put_if_absent notify/pages/<alert id>.json {"replica":"a"} ─► created: a pages
//!  replica b ─ refuses ─► put_if_absent notify/pages/<alert id>.json ─► existed, names a: b does not
//! ```
//!
//! The claim is written before the page is queued in the local outbox, so
//! a crash in between would lose it, were it not that a replica finding
//! its own claim pages again: a refusal is found again at every start, and
//! the outbox knows the message ids it queued, so nothing is sent twice.
//! A claimant that never comes back (its pod removed) leaves the page
//! unsent by the others: the refusal is still in every refusing replica's
//! audit log, alerts file and `/readyz`.

use serde::{Deserialize, Serialize};

use super::{FleetInbox, io, parse};
use crate::alert::outbox::OutboxError;
use crate::store::backend::Put;

/// The folder of the claims.
pub const PAGES: &str = "notify/pages";

#[derive(Serialize, Deserialize)]
struct Claim {
    replica: String,
}

impl FleetInbox {
    /// Whether this replica pages the alert `alert_id`: yes when its claim
    /// is the one on the store (written now, or by this replica before a
    /// restart).
    pub fn claim_page(&self, alert_id: &str) -> Result<bool, OutboxError> {
        let key = format!("{PAGES}/{alert_id}.json");
        let mine = Claim {
            replica: self.me.clone(),
        };
        let bytes = serde_json::to_vec(&mine).expect("claims serialize");
        match self
            .objects
            .put_if_absent(&key, &bytes)
            .map_err(io(&*self.objects, &key))?
        {
            Put::Created => Ok(true),
            Put::Existed => {
                let Some(stored) = self.objects.get(&key).map_err(io(&*self.objects, &key))? else {
                    // listed as there, then gone: nobody else pages it
                    return Ok(true);
                };
                let claim: Claim = parse(&*self.objects, &key, &stored)?;
                Ok(claim.replica == self.me)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::clock::ManualClock;
    use crate::alert::deliver::tests::{alert, lines, wait_for};
    use crate::alert::fleet::tests::{replica, rules, shared};

    #[test]
    fn the_first_replica_to_claim_a_page_pages_it_and_again_after_a_restart() {
        let (_dir, objects) = shared();
        let a = FleetInbox::new("a", objects.clone());
        let b = FleetInbox::new("b", objects.clone());
        assert!(a.claim_page("x").unwrap());
        assert!(!b.claim_page("x").unwrap());
        assert!(a.claim_page("x").unwrap(), "a's own claim, after a restart");
        assert!(b.claim_page("y").unwrap(), "another alert is b's to claim");
    }

    /// Two replicas refuse the same baseline and page the same alert: one
    /// message reaches the receiver.
    #[test]
    fn two_replicas_paging_one_refusal_send_it_once() {
        let (dir, objects) = shared();
        let out = dir.path().join("out.jsonl");
        let r = rules(&out);
        let clock = ManualClock::new(1_700_000_000_000);
        let start = |name: &str| replica(dir.path(), name, &r, &clock, &objects);
        let (na, nb) = (start("a"), start("b"));
        let refusal = alert("baseline-refused");
        na.page(&refusal).unwrap();
        nb.page(&refusal).unwrap();
        wait_for("the page", || !lines(&out).is_empty());
        na.stop();
        nb.stop();
        let got = lines(&out);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0]["kind"], "trigger");
    }
}
