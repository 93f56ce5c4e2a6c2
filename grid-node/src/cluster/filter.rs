//! Filters on what this node sends its peers, for fault tests: drop or delay messages by
//! peer and by kind, as TiKV's simulated transport does. A partition is a drop rule on
//! each side; a lagging follower is its appends dropped; a slow link is a delay. With no
//! rule (production) every message passes; the admin endpoint's `/faults/block` (only with
//! `--fault-injection`, only on loopback) sets drop rules for whole peers.
//!
//! Deciding is pure ([`Filters::decide`]); the peer pool acts on the answer.

use std::collections::BTreeSet;
use std::time::Duration;

use super::peer::{PeerRequest, RaftRpc};

/// What a peer message is, for filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKind {
    /// Raft log replication and heartbeats.
    Append,
    /// Raft elections.
    Vote,
    /// Raft snapshot transfer.
    Snapshot,
    /// A node asking to join.
    Join,
    /// The control leader's liveness ping.
    Ping,
    /// A leadership hand-over.
    Elect,
    /// A removed member told it may let go.
    Release,
    /// A node leaving.
    Leave,
    /// A node that was cut off asking to be back.
    Rejoin,
    /// A leader asking whether a node hosts a group.
    Hosts,
}

impl MessageKind {
    /// The three kinds of Raft traffic.
    pub const RAFT: [MessageKind; 3] = [
        MessageKind::Append,
        MessageKind::Vote,
        MessageKind::Snapshot,
    ];

    /// The kind of `request`.
    pub fn of(request: &PeerRequest) -> Self {
        match request {
            PeerRequest::Raft { rpc, .. } => match rpc {
                RaftRpc::Append(_) => MessageKind::Append,
                RaftRpc::Vote(_) => MessageKind::Vote,
                RaftRpc::Snapshot(_) => MessageKind::Snapshot,
            },
            PeerRequest::Join { .. } => MessageKind::Join,
            PeerRequest::Ping => MessageKind::Ping,
            PeerRequest::Elect { .. } => MessageKind::Elect,
            PeerRequest::Release { .. } => MessageKind::Release,
            PeerRequest::Leave { .. } => MessageKind::Leave,
            PeerRequest::Rejoin { .. } => MessageKind::Rejoin,
            PeerRequest::Hosts { .. } => MessageKind::Hosts,
        }
    }
}

/// What happens to a message a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It fails as if the peer were unreachable.
    Drop,
    /// It is sent this much later (within the caller's own time limit).
    Delay(Duration),
}

/// One filter: messages to `to` (any peer when `None`) of `kinds` (any kind when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The peer's address, as the map lists it.
    pub to: Option<String>,
    /// The kinds matched; empty matches every kind.
    pub kinds: BTreeSet<MessageKind>,
    /// What happens to a match.
    pub action: Action,
}

impl Rule {
    /// Drops everything sent to `addr`.
    pub fn cut(addr: impl Into<String>) -> Self {
        Self {
            to: Some(addr.into()),
            kinds: BTreeSet::new(),
            action: Action::Drop,
        }
    }

    /// The same rule, for `kinds` only.
    pub fn only(mut self, kinds: impl IntoIterator<Item = MessageKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// The same rule, delaying by `by` instead of dropping.
    pub fn delay(mut self, by: Duration) -> Self {
        self.action = Action::Delay(by);
        self
    }

    fn matches(&self, to: &str, kind: MessageKind) -> bool {
        self.to.as_deref().is_none_or(|t| t == to)
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// The rules of one node, first match wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    rules: Vec<Rule>,
}

impl Filters {
    /// Filters applying `rules` in order.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// What happens to a message of `kind` to `to`: `None` sends it as is.
    pub fn decide(&self, to: &str, kind: MessageKind) -> Option<Action> {
        self.rules
            .iter()
            .find(|r| r.matches(to, kind))
            .map(|r| r.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "127.0.0.1:1";
    const B: &str = "127.0.0.1:2";

    #[test]
    fn no_rule_sends_everything() {
        let f = Filters::default();
        assert_eq!(f.decide(A, MessageKind::Append), None);
    }

    #[test]
    fn rules_match_by_peer_and_kind_and_the_first_match_wins() {
        let slow = Duration::from_millis(30);
        let f = Filters::new(vec![
            Rule::cut(A).only([MessageKind::Vote]),
            Rule::cut(A).only(MessageKind::RAFT).delay(slow),
            Rule::cut(B),
        ]);
        let table = [
            (A, MessageKind::Vote, Some(Action::Drop)),
            (A, MessageKind::Append, Some(Action::Delay(slow))),
            (A, MessageKind::Snapshot, Some(Action::Delay(slow))),
            (A, MessageKind::Ping, None),
            (B, MessageKind::Ping, Some(Action::Drop)),
            (B, MessageKind::Append, Some(Action::Drop)),
            ("127.0.0.1:3", MessageKind::Append, None),
        ];
        for (to, kind, want) in table {
            assert_eq!(f.decide(to, kind), want, "{to} {kind:?}");
        }
    }

    #[test]
    fn a_rule_without_a_peer_matches_every_peer() {
        let f = Filters::new(vec![Rule {
            to: None,
            kinds: [MessageKind::Ping].into(),
            action: Action::Drop,
        }]);
        assert_eq!(f.decide(A, MessageKind::Ping), Some(Action::Drop));
        assert_eq!(f.decide(B, MessageKind::Ping), Some(Action::Drop));
        assert_eq!(f.decide(B, MessageKind::Join), None);
    }
}
