//! A partition's objects as a backup carries them ([`BackupObject`]).

use grid_proto::backup::BackupObject;
use grid_proto::Millis;

use super::{GeoRole, Store};

impl Store {
    /// Every object this site holds the primary of (being handed over included), as of `now`, sorted by key; objects
    /// already past their deadline (not yet expired by a tick) are left out.
    pub fn backup(&self, now: Millis) -> Vec<BackupObject> {
        let mut out: Vec<BackupObject> = self
            .objects
            .iter()
            .filter(|(_, e)| !matches!(e.role, GeoRole::Proxy { .. }))
            .filter_map(|(obj, e)| {
                let left_ms = match e.deadline() {
                    Some(at) if at <= now => return None,
                    Some(at) => Some(at - now),
                    None => None,
                };
                Some(BackupObject {
                    obj: obj.clone(),
                    value: e.value.clone(),
                    timeout: e.timeout,
                    left_ms,
                    tags: self.tags_of(obj).to_vec(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.obj.cmp(&b.obj));
        out
    }
}
