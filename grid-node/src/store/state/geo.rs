//! The geo role of an object and the replicated half of a migration between sites.
//!
//! Exactly one site holds an object's primary. A migration is two steps, each a
//! replicated command on its site:
//!
//! ```text
//! destination                          source
//!   Export(transfer) ───────────────▶  Primary ─▶ Migrating{to, transfer}, data back
//!   Import(transfer): primary here     (writes and reads wait while migrating)
//!   Commit(transfer) ───────────────▶  Migrating ─▶ Proxy{to}   (bytes dropped)
//! ```
//!
//! A source left `Migrating` (either side crashed between the steps) asks the
//! destination `Resolve(transfer)`: if the import happened, the source commits; if not,
//! the destination records the transfer as aborted (a late `Import` of it is refused)
//! and the source aborts back to primary. Either way one primary remains.
//!
//! A proxy answers every operation with `Moved{site}`; it expires silently (no event, so
//! `Session_End` fires only at the primary).

use std::collections::BTreeMap;

use grid_proto::{GeoOp, Millis, ObjKey, ObjectInfo, Reply, Timeout, Unavailability};
use serde::{Deserialize, Serialize};

use super::{Entry, Store, StoreEvent};

/// How long a transfer's outcome is remembered at the destination. A source that cannot
/// reach its destination for longer than this while a hand-over is unresolved would be
/// told "not imported"; sources ask every second, so only a site cut off for a day meets
/// this bound.
const TRANSFER_MEMORY_MS: Millis = 24 * 60 * 60 * 1000;

/// Where an object's primary is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum GeoRole {
    /// Here.
    #[default]
    Primary,
    /// Being handed to `to`; nothing changes it until the hand-over resolves.
    Migrating {
        /// The destination site.
        to: String,
        /// The hand-over.
        transfer: u64,
        /// When the export happened.
        since: Millis,
    },
    /// At `site`; this is a read-only pointer to it.
    Proxy {
        /// The site holding the primary.
        site: String,
    },
}

/// Outcomes of transfers at the destination, by transfer id: `true` imported, `false`
/// aborted (resolved before any import).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfers {
    outcomes: BTreeMap<u64, (bool, Millis)>,
}

impl Transfers {
    fn forget_before(&mut self, now: Millis) {
        self.outcomes
            .retain(|_, (_, at)| at.saturating_add(TRANSFER_MEMORY_MS) > now);
    }
}

impl Store {
    /// The reply for an operation on an object that is not primary here, if it is not.
    pub(super) fn geo_gate(&self, obj: &ObjKey) -> Option<Reply> {
        match &self.objects.get(obj)?.role {
            GeoRole::Primary => None,
            GeoRole::Proxy { site } => Some(Reply::Moved { site: site.clone() }),
            GeoRole::Migrating { to, .. } => Some(Reply::Unavailable {
                code: Unavailability::Migrating,
                reason: format!("the object is being handed over to site {to}; retry"),
            }),
        }
    }

    /// Objects migrating since before `before`, with their destination and transfer.
    pub fn migrating(&self, before: Millis) -> Vec<(ObjKey, String, u64)> {
        self.objects
            .iter()
            .filter_map(|(obj, e)| match &e.role {
                GeoRole::Migrating {
                    to,
                    transfer,
                    since,
                } if *since < before => Some((obj.clone(), to.clone(), *transfer)),
                _ => None,
            })
            .collect()
    }

    /// Applies one migration step at `now`.
    pub fn apply_geo(&mut self, op: &GeoOp, now: Millis) -> (Reply, Vec<StoreEvent>) {
        let mut events = Vec::new();
        self.settle(op.obj(), now, &mut events);
        self.transfers.forget_before(now);
        let reply = match op {
            GeoOp::Export {
                obj,
                transfer,
                to_site,
            } => self.export(obj, *transfer, to_site, now),
            GeoOp::Import {
                obj,
                value,
                version,
                timeout,
                uninitialized,
                transfer,
                tags,
            } => self.import(
                obj,
                (value, tags),
                *version,
                (*timeout, *uninitialized),
                *transfer,
                now,
            ),
            GeoOp::Commit { obj, transfer } => self.finish(obj, *transfer, true),
            GeoOp::Abort { obj, transfer } => self.finish(obj, *transfer, false),
            GeoOp::Resolve { transfer, .. } => {
                let committed = self
                    .transfers
                    .outcomes
                    .entry(*transfer)
                    .or_insert((false, now))
                    .0;
                Reply::Transfer { committed }
            }
        };
        (reply, events)
    }

    fn export(&mut self, obj: &ObjKey, transfer: u64, to_site: &str, now: Millis) -> Reply {
        let Some(entry) = self.objects.get_mut(obj) else {
            return Reply::NotFound;
        };
        match &entry.role {
            GeoRole::Proxy { site } => return Reply::Moved { site: site.clone() },
            // A retried export of the same hand-over gets the same answer.
            GeoRole::Migrating { transfer: t, .. } if *t == transfer => {}
            GeoRole::Migrating { to, .. } => {
                return Reply::Unavailable {
                    code: Unavailability::Migrating,
                    reason: format!("the object is being handed over to site {to}; retry"),
                }
            }
            GeoRole::Primary => {
                if let Some(lock) = entry.lock {
                    return Entry::locked_reply(lock, now);
                }
                entry.role = GeoRole::Migrating {
                    to: to_site.to_string(),
                    transfer,
                    since: now,
                };
            }
        }
        let (value, info) = (
            entry.value.clone(),
            ObjectInfo {
                version: entry.version,
                lock_id: None,
                lock_age_ms: 0,
                uninitialized: entry.uninitialized,
                timeout: entry.timeout,
            },
        );
        Reply::GeoExported {
            value,
            info,
            tags: self.tags_of(obj).to_vec(),
        }
    }

    fn import(
        &mut self,
        obj: &ObjKey,
        (value, tags): (&[u8], &[String]),
        version: u64,
        (timeout, uninitialized): (Timeout, bool),
        transfer: u64,
        now: Millis,
    ) -> Reply {
        match self.transfers.outcomes.get(&transfer) {
            Some((false, _)) => {
                return Reply::Unavailable {
                    code: Unavailability::HandOverAborted,
                    reason: "the hand-over was aborted".into(),
                }
            }
            Some((true, _)) => {
                if let Some(e) = self.objects.get(obj) {
                    return Reply::Added { version: e.version };
                }
            }
            None => {}
        }
        if let Some(GeoRole::Primary | GeoRole::Migrating { .. }) =
            self.objects.get(obj).map(|e| &e.role)
        {
            return Reply::AlreadyExists;
        }
        // The proxy (if any) gives way to the primary.
        self.take(obj);
        // The source's version when it is ahead of this partition's counter; a fresh
        // one otherwise, so no version is ever reused here (near caches trust that).
        let version = version.max(self.seq + 1);
        self.seq = version - 1;
        let version = self.insert_new(obj, value, timeout, uninitialized, now);
        self.tags.set(obj, tags.to_vec());
        self.transfers.outcomes.insert(transfer, (true, now));
        Reply::Added { version }
    }

    /// Commits (the destination holds the primary: keep a proxy) or aborts (primary
    /// here again) a hand-over of `obj`.
    fn finish(&mut self, obj: &ObjKey, transfer: u64, commit: bool) -> Reply {
        let Some(entry) = self.objects.get_mut(obj) else {
            return Reply::NotFound;
        };
        let to = match &entry.role {
            GeoRole::Migrating {
                to, transfer: t, ..
            } if *t == transfer => to.clone(),
            _ => return Reply::NotFound,
        };
        let version = entry.version;
        if commit {
            self.value_bytes -= entry.value.len() as u64;
            entry.value = Vec::new();
            entry.role = GeoRole::Proxy { site: to };
        } else {
            entry.role = GeoRole::Primary;
        }
        // Expiry was held while migrating; it runs again (silently, for a proxy).
        entry.expires_at = None;
        self.refile_expiry(obj);
        Reply::Updated { version }
    }
}

#[cfg(test)]
#[path = "geo_tests.rs"]
mod tests;
