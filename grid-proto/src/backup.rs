//! What a backup carries of each object, as a partition leader exports it
//! (`Request::Export`) and `gridctl restore` writes it back: its key, value, tags and
//! timeout, with the time it had left. Locks, waiters and events owed are not carried: a backup is
//! restored into a new cluster, where no holder or listener of them exists.

use rkyv::{Archive, Deserialize, Serialize};
use serde::{Deserialize as SerdeDeserialize, Serialize as SerdeSerialize};

use crate::msg::{Millis, ObjKey, Timeout};

/// One object of an export.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, SerdeSerialize, SerdeDeserialize,
)]
pub struct BackupObject {
    /// Its identity.
    pub obj: ObjKey,
    /// Its bytes.
    pub value: Vec<u8>,
    /// Its timeout as set.
    pub timeout: Timeout,
    /// Time it had left when exported (none without a timeout).
    pub left_ms: Option<Millis>,
    /// Its tags, sorted.
    pub tags: Vec<String>,
}

/// An object as backup files of format 1 carry it: without tags.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BackupObjectV1 {
    /// Its identity.
    pub obj: ObjKey,
    /// Its bytes.
    pub value: Vec<u8>,
    /// Its timeout as set.
    pub timeout: Timeout,
    /// Time it had left when exported.
    pub left_ms: Option<Millis>,
}

impl From<BackupObjectV1> for BackupObject {
    fn from(o: BackupObjectV1) -> Self {
        BackupObject {
            obj: o.obj,
            value: o.value,
            timeout: o.timeout,
            left_ms: o.left_ms,
            tags: Vec::new(),
        }
    }
}

impl BackupObject {
    /// The timeout to restore it with: a sliding one as it was (it restarts at the
    /// restore, as after a read), an absolute one for the time it had left.
    pub fn restore_timeout(&self) -> Timeout {
        match (self.timeout, self.left_ms) {
            (Timeout::Absolute { .. }, Some(left)) => Timeout::Absolute { ms: left.max(1) },
            (timeout, _) => timeout,
        }
    }

    /// Bytes it takes in a page, about.
    pub fn size(&self) -> usize {
        let tags: usize = self.tags.iter().map(|t| t.len() + 8).sum();
        self.obj.namespace.len() + self.obj.key.len() + self.value.len() + tags + 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absolute_timeout_comes_back_with_the_time_it_had_left() {
        let object = |timeout, left_ms| BackupObject {
            obj: ObjKey::new("s", "k"),
            value: Vec::new(),
            timeout,
            left_ms,
            tags: Vec::new(),
        };
        let absolute = object(Timeout::Absolute { ms: 60_000 }, Some(12_000));
        assert_eq!(absolute.restore_timeout(), Timeout::Absolute { ms: 12_000 });
        let sliding = object(Timeout::Sliding { ms: 60_000 }, Some(5));
        assert_eq!(sliding.restore_timeout(), Timeout::Sliding { ms: 60_000 });
        let due = object(Timeout::Absolute { ms: 60_000 }, Some(0));
        assert_eq!(due.restore_timeout(), Timeout::Absolute { ms: 1 });
        assert_eq!(object(Timeout::None, None).restore_timeout(), Timeout::None);
    }
}
