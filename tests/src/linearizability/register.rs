//! The model of one grid object for the checker: a value with a server-assigned version
//! that strictly increases on every write and is never reused, even across remove and
//! re-create. See the parent module for how unconfirmed versions are handled.

use std::collections::HashSet;
use std::fmt::{self, Debug};
use std::sync::Arc;

use super::Model;

/// The bytes of a value, shown as text when they are UTF-8. [`Model::forget`] blanks the
/// value of a pending write that no read returned, shown as `<never read>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Value(Option<Arc<[u8]>>);

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Some(bytes.into()))
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self(Some(text.as_bytes().into()))
    }
}

impl Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `None` stands for the value of a pending write that no read returned.
        let Some(bytes) = &self.0 else {
            return f.write_str("<never read>");
        };
        if let Ok(text) = std::str::from_utf8(bytes) {
            return write!(f, "{text:?}");
        }
        f.write_str("0x")?;
        bytes.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// The model of one grid object: a value with a server-assigned version that strictly
/// increases on every write of the key (also across remove and re-create) and is never
/// reused. Versions start at 1. Expiry is not modelled: use objects that do not expire.
#[derive(Clone, Copy, Debug, Default)]
pub struct VersionedRegister;

/// The version of the current value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// Seen in a response.
    Known(u64),
    /// Written by an op that got no response and not revealed by a later op yet; at
    /// least [`RegisterState::last_version`].
    Unconfirmed,
}

/// The state of one grid object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegisterState {
    /// The value and its version; `None` while absent.
    pub current: Option<(Value, Version)>,
    /// The least value the highest version assigned so far can have: exact once every
    /// version is known; each unconfirmed write adds one. 0 before the first write.
    pub last_version: u64,
}

impl RegisterState {
    /// The state with the current version revealed as `version`, if it can be that.
    fn pinned(&self, version: u64) -> Option<Self> {
        let (value, current) = self.current.as_ref()?;
        match *current {
            Version::Known(known) => (known == version).then(|| self.clone()),
            Version::Unconfirmed => (version >= self.last_version).then(|| Self {
                current: Some((value.clone(), Version::Known(version))),
                last_version: version,
            }),
        }
    }

    /// The state after writing `value` at `version` (`None`: unconfirmed), if legal.
    fn written(&self, value: &Value, version: Option<u64>) -> Option<Self> {
        let (version, last_version) = match version {
            Some(version) => (Version::Known(version), version),
            None => (Version::Unconfirmed, self.last_version.saturating_add(1)),
        };
        let current = Some((value.clone(), version));
        (last_version > self.last_version).then_some(Self {
            current,
            last_version,
        })
    }

    fn removed(&self) -> Self {
        Self {
            current: None,
            last_version: self.last_version,
        }
    }

    /// True if the object can never again be at `version` (holding `value`, if given),
    /// as `last_version` never decreases.
    fn gone(&self, version: u64, value: Option<&Value>) -> bool {
        if version != self.last_version {
            return version < self.last_version;
        }
        // Only the current object, confirmed or not, can be at the newest version.
        match (&self.current, value) {
            (None, _) => true,
            (Some((current, _)), Some(value)) => current != value,
            (Some(_), None) => false,
        }
    }
}

/// A request to one grid object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterInput {
    /// Reads value and version.
    Read,
    /// Writes the value whether or not the object exists (upsert).
    Write(Value),
    /// Writes the value only if the object exists at `expected_version`.
    Cas {
        /// The version the caller read.
        expected_version: u64,
        /// The new value.
        value: Value,
    },
    /// Removes the object.
    Remove,
}

/// A grid object's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOutput {
    /// `Read`: the value and version, or `None` if absent.
    ReadOk(Option<(Value, u64)>),
    /// `Write` or `Cas` succeeded with this new version.
    Written(u64),
    /// `Cas` failed: the current version, or `None` if absent (the grid's `NotFound`).
    Mismatch(Option<u64>),
    /// `Remove`: whether the object existed.
    Removed(bool),
}

impl Model for VersionedRegister {
    type State = RegisterState;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> RegisterState {
        RegisterState {
            current: None,
            last_version: 0,
        }
    }

    fn step(
        &self,
        state: &RegisterState,
        input: &RegisterInput,
        output: &RegisterOutput,
    ) -> Option<RegisterState> {
        use RegisterInput as In;
        use RegisterOutput as Out;
        let absent = state.current.is_none();
        match (input, output) {
            (In::Read, Out::ReadOk(None)) | (In::Cas { .. }, Out::Mismatch(None)) => {
                absent.then(|| state.clone())
            }
            (In::Read, Out::ReadOk(Some((value, version)))) => {
                let (current, _) = state.current.as_ref()?;
                state.pinned(*version).filter(|_| current == value)
            }
            (In::Write(value), Out::Written(version)) => state.written(value, Some(*version)),
            (
                In::Cas {
                    expected_version: expected,
                    value,
                },
                Out::Written(version),
            ) => state.pinned(*expected)?.written(value, Some(*version)),
            (
                In::Cas {
                    expected_version: expected,
                    ..
                },
                Out::Mismatch(Some(current)),
            ) => state.pinned(*current).filter(|_| current != expected),
            (In::Remove, Out::Removed(existed)) => (*existed != absent).then(|| state.removed()),
            // An answer of the wrong kind for the request.
            _ => None,
        }
    }

    fn step_unknown(&self, state: &RegisterState, input: &RegisterInput) -> Vec<RegisterState> {
        // Outcomes that change nothing (mismatches, removing nothing) are left out.
        let next = match input {
            RegisterInput::Read => None,
            RegisterInput::Write(value) => state.written(value, None),
            RegisterInput::Cas {
                expected_version,
                value,
            } => state
                .pinned(*expected_version)
                .and_then(|at| at.written(value, None)),
            RegisterInput::Remove => state.current.as_ref().map(|_| state.removed()),
        };
        next.into_iter().collect()
    }

    /// Same current object and a bound on versions no higher: every write and every
    /// revealed version legal from `worse` is legal from `better`.
    fn dominates(&self, better: &RegisterState, worse: &RegisterState) -> bool {
        better.current == worse.current && better.last_version <= worse.last_version
    }

    /// Only reads compare values, so a pending write's value no read returned is dropped.
    fn forget(&self, pending: &mut [RegisterInput], outputs: &[&RegisterOutput]) {
        let read: HashSet<&Value> = outputs
            .iter()
            .filter_map(|output| match output {
                RegisterOutput::ReadOk(Some((value, _))) => Some(value),
                _ => None,
            })
            .collect();
        for input in pending {
            if let RegisterInput::Write(value) | RegisterInput::Cas { value, .. } = input {
                if !read.contains(value) {
                    *value = Value(None);
                }
            }
        }
    }

    /// Reads change nothing; a CAS expecting a version gone by can no longer succeed.
    fn never_effective(&self, state: &RegisterState, input: &RegisterInput) -> bool {
        match input {
            RegisterInput::Read => true,
            RegisterInput::Cas {
                expected_version, ..
            } => state.gone(*expected_version, None),
            RegisterInput::Write(_) | RegisterInput::Remove => false,
        }
    }

    /// `last_version` never decreases: a version below it is never seen again, and a new
    /// version must exceed it.
    fn never_legal(
        &self,
        state: &RegisterState,
        input: &RegisterInput,
        output: &RegisterOutput,
    ) -> bool {
        use RegisterInput as In;
        use RegisterOutput as Out;
        match (input, output) {
            (In::Write(_), Out::Written(version)) => *version <= state.last_version,
            (
                In::Cas {
                    expected_version: expected,
                    ..
                },
                Out::Written(version),
            ) => *version <= state.last_version || state.gone(*expected, None),
            (_, Out::ReadOk(Some((value, version)))) => state.gone(*version, Some(value)),
            (_, Out::Mismatch(Some(version))) => state.gone(*version, None),
            _ => false,
        }
    }
}
