//! Bounds on what a request may carry. Checked on both sides: the client fails fast, the
//! node never trusts the client.

use thiserror::Error;

use crate::items::{check_name, ItemMapError};
use crate::msg::{Op, Reply, WriteBody};

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 256;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most tags one object carries.
pub const MAX_TAGS: usize = 8;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 64;
/// Default largest value a node accepts (`--max-value-bytes`).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Room in a frame beyond the value: header, namespace, key and encoding overhead.
pub const FRAME_OVERHEAD_BYTES: usize = 16 * 1024;

/// The frame limit that fits one value of `max_value_bytes` plus its envelope.
pub fn max_frame_for(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_add(FRAME_OVERHEAD_BYTES)
}

/// Why a namespace or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The namespace is the empty string.
    #[error("namespace is empty")]
    EmptyNamespace,
    /// The namespace is longer than [`MAX_NAMESPACE_BYTES`].
    #[error("namespace is {len} bytes; the limit is {MAX_NAMESPACE_BYTES}")]
    NamespaceTooLong {
        /// Length that was sent.
        len: usize,
    },
    /// The key has no bytes.
    #[error("key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("key is {len} bytes; the limit is {MAX_KEY_BYTES}")]
    KeyTooLong {
        /// Length that was sent.
        len: usize,
    },
}

/// Checks a namespace against the limits.
pub fn validate_namespace(namespace: &str) -> Result<(), KeyError> {
    if namespace.is_empty() {
        return Err(KeyError::EmptyNamespace);
    }
    if namespace.len() > MAX_NAMESPACE_BYTES {
        return Err(KeyError::NamespaceTooLong {
            len: namespace.len(),
        });
    }
    Ok(())
}

/// Checks a namespace and key against the limits.
pub fn validate_object_key(namespace: &str, key: &[u8]) -> Result<(), KeyError> {
    validate_namespace(namespace)?;
    if key.is_empty() {
        return Err(KeyError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::KeyTooLong { len: key.len() });
    }
    Ok(())
}

/// Why a tag was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TagError {
    /// The tag is the empty string.
    #[error("tag is empty")]
    Empty,
    /// The tag is longer than [`MAX_TAG_BYTES`].
    #[error("tag is {len} bytes; the limit is {MAX_TAG_BYTES}")]
    TooLong {
        /// Length that was sent.
        len: usize,
    },
    /// More than [`MAX_TAGS`] tags for one object.
    #[error("{count} tags; an object carries at most {MAX_TAGS}")]
    TooMany {
        /// Tags that were sent.
        count: usize,
    },
}

/// Checks one tag against the limits.
pub fn validate_tag(tag: &str) -> Result<(), TagError> {
    if tag.is_empty() {
        return Err(TagError::Empty);
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(TagError::TooLong { len: tag.len() });
    }
    Ok(())
}

/// Checks an object's tags against the limits.
pub fn validate_tags(tags: &[String]) -> Result<(), TagError> {
    if tags.len() > MAX_TAGS {
        return Err(TagError::TooMany { count: tags.len() });
    }
    tags.iter().try_for_each(|t| validate_tag(t))
}

/// Why an operation was refused before it reached a partition.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpError {
    /// The namespace or key is out of bounds.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The value is over the limit.
    #[error("value is {size} bytes; the limit is {limit}")]
    ValueTooLarge {
        /// Value length sent.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A tag is out of bounds.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// An item name is out of bounds.
    #[error(transparent)]
    Item(#[from] ItemMapError),
}

impl From<OpError> for Reply {
    /// The reply a node sends for an operation it refuses at the edge.
    fn from(err: OpError) -> Self {
        match err {
            OpError::ValueTooLarge { size, limit } => Reply::TooLarge {
                size: size as u64,
                limit: limit as u64,
            },
            OpError::Key(_) | OpError::Tag(_) | OpError::Item(_) => Reply::BadRequest {
                reason: err.to_string(),
            },
        }
    }
}

/// Checks an operation's key and value against the limits.
pub fn check_op(op: &Op, max_value_bytes: usize) -> Result<(), OpError> {
    let obj = op.obj();
    validate_object_key(&obj.namespace, &obj.key)?;
    let size = op.value_len();
    if size > max_value_bytes {
        return Err(OpError::ValueTooLarge {
            size,
            limit: max_value_bytes,
        });
    }
    match op {
        Op::Write { body, tags, .. } => {
            if let Some(tags) = tags {
                validate_tags(tags)?;
            }
            if let WriteBody::Items(changes) = body {
                changes.remove.iter().try_for_each(|n| check_name(n))?;
                changes.set.iter().try_for_each(|i| check_name(&i.name))?;
            }
        }
        Op::RemoveTagged { tag, .. } => validate_tag(tag)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_bounded_in_count_and_length() {
        let tag = |n: usize| "t".repeat(n);
        assert_eq!(validate_tags(&vec![tag(MAX_TAG_BYTES); MAX_TAGS]), Ok(()));
        assert_eq!(
            validate_tags(&vec![tag(1); MAX_TAGS + 1]),
            Err(TagError::TooMany {
                count: MAX_TAGS + 1
            })
        );
        assert_eq!(
            validate_tag(&tag(MAX_TAG_BYTES + 1)),
            Err(TagError::TooLong {
                len: MAX_TAG_BYTES + 1
            })
        );
        assert_eq!(validate_tag(""), Err(TagError::Empty));
        let op = Op::RemoveTagged {
            obj: crate::ObjKey::new("ns", b"k".to_vec()),
            tag: String::new(),
        };
        let refused: Reply = check_op(&op, 100).unwrap_err().into();
        assert!(matches!(refused, Reply::BadRequest { reason } if reason == "tag is empty"));
    }

    #[test]
    fn bounds_are_inclusive() {
        assert_eq!(validate_object_key("ns", b"k"), Ok(()));
        assert_eq!(validate_object_key("", b"k"), Err(KeyError::EmptyNamespace));
        assert_eq!(validate_object_key("ns", b""), Err(KeyError::EmptyKey));
        let max_key = vec![b'k'; MAX_KEY_BYTES];
        assert_eq!(validate_object_key("ns", &max_key), Ok(()));
        let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
        assert_eq!(
            validate_object_key("ns", &long_key),
            Err(KeyError::KeyTooLong {
                len: MAX_KEY_BYTES + 1
            })
        );
        let long_ns = "n".repeat(MAX_NAMESPACE_BYTES + 1);
        assert!(matches!(
            validate_object_key(&long_ns, b"k"),
            Err(KeyError::NamespaceTooLong { .. })
        ));
    }
}
