//! Coming back from a data directory: a node that finds its identity there resumes as
//! the same member, every group it held reopened from its files, instead of
//! bootstrapping or joining. Raft does the rest: each group's replica applies its log
//! after its snapshot as its leader commits, and catches up on what it missed from the
//! leader's log (or a snapshot, if the leader has purged that far). A node the control
//! leader marked down meanwhile asks to be back (`liveness`).
//!
//! A copy that may lack entries it had acknowledged must not come back as the same
//! member: its group's leader counts on them (Raft's safety, and openraft's bookkeeping
//! of each follower, assume a follower never loses what it stored). That is a log cut
//! back past a good record (a checksum or a length that does not match, or a torn tail
//! when appends were not synced before they were acknowledged), a damaged snapshot, or
//! an unsynced policy on a machine that went down under the node. Such a node joins
//! again as a new member and copies its replicas from its peers; its old id is replaced
//! once marked down. If no member admits it (the whole cluster went down at once) it
//! resumes with the copy as it is, which is then the best there is.
//!
//! ```text
//! start ─▶ no data dir, or no identity in it ─▶ clear leftovers; bootstrap | join
//!       └▶ identity ─▶ open control + every group on disk
//!            copy intact ─────────────────────────▶ resume as itself
//!            copy may lack acknowledged entries ─▶ join as new (seeds: --join, else the
//!                                                  members the control state names)
//!                                                  ├ admitted ─▶ forget the copy
//!                                                  └ nobody   ─▶ resume as itself
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use openraft::EntryPayload;

use super::{lock, ClusterError, ClusterNode};
use crate::cluster::control::{ClusterState, ControlCommand};
use crate::cluster::durable::{boot_id, DataDir, Identity, OpenedGroup};
use crate::cluster::log_store::GroupLog;
use crate::cluster::raft_types::{GroupCommand, GroupId, CONTROL_GROUP};
use crate::cluster::state_machine::{GroupSm, Machine};
use crate::disk::frame::Damage;
use crate::disk::{Cut, FsyncPolicy};
use crate::partition::Partition;

/// Why a reopened group may lack entries it had acknowledged, if it may: from what its
/// snapshot file and its log's cut were found to be.
fn lossy(snapshot: Result<(), &str>, cut: Option<&Cut>, policy: FsyncPolicy) -> Option<String> {
    if let Err(why) = snapshot {
        return Some(format!("snapshot refused: {why}"));
    }
    let cut = cut?;
    // A torn last record never reached the disk whole, so under `always` it was never
    // acknowledged; any other damage hit a record that had.
    (cut.damage != Damage::Torn || policy != FsyncPolicy::Always).then(|| {
        format!(
            "log {} cut back at byte {} ({:?})",
            cut.path.display(),
            cut.at,
            cut.damage
        )
    })
}

impl ClusterNode {
    /// Resumes from the data directory, if it holds an identity; false if this node
    /// must bootstrap or join (leftover groups of an unfinished start are removed).
    pub(super) async fn resume(&self) -> Result<bool, ClusterError> {
        let Some(data) = self.config.data.clone() else {
            return Ok(false);
        };
        let unclean_boot = data.mark_running()?.is_some_and(|boot| boot != boot_id());
        let Some(identity) = data.identity()? else {
            data.clear_groups().await?;
            return Ok(false);
        };
        let mut opened = Vec::new();
        for g in data.groups()? {
            opened.push((g, data.open_group(g).await?));
        }
        let mut doubts: Vec<String> = opened
            .iter()
            .filter_map(|(g, o)| {
                let snapshot = o.snapshot.as_ref().map(|_| ()).map_err(String::as_str);
                lossy(snapshot, o.cut.as_ref(), data.policy())
                    .map(|why| format!("group {g}: {why}"))
            })
            .collect();
        if unclean_boot && data.policy() != FsyncPolicy::Always {
            doubts.push(format!(
                "the machine went down under the node, and --fsync {} left the last appends unsynced",
                data.policy()
            ));
        }
        if !doubts.is_empty() && self.join_as_new(&data, &opened, &doubts).await? {
            return Ok(true);
        }
        self.me.store(identity.node_id, Ordering::Relaxed);
        self.peers.set_cluster(identity.cluster_id);
        let mut partitions = 0;
        for (g, group) in opened {
            if g == CONTROL_GROUP {
                let machine = Machine::Control(ClusterState::default());
                let (log, sm) = self.reopen(group, machine)?;
                let raft = self.start_raft(CONTROL_GROUP, log, sm.clone()).await?;
                let _ = self.control.set((raft, sm));
            } else {
                let machine = Machine::Partition(Box::new(Partition::new(self.config.partition)));
                let (log, sm) = self.reopen(group, machine)?;
                self.host(g, log, sm).await?;
                partitions += 1;
            }
        }
        if self.control.get().is_none() {
            return Err(ClusterError::Raft(format!(
                "{} has an identity but no control group: move the directory away to start this node as a new member",
                data.root().display()
            )));
        }
        *lock(&self.last_pinged) = Instant::now();
        tracing::info!(
            id = identity.node_id,
            partitions,
            dir = %data.root().display(),
            fsync = %data.policy(),
            "resumed from the data directory"
        );
        Ok(true)
    }

    /// Joins as a new member when the copy on disk is in doubt; true once admitted.
    async fn join_as_new(
        &self,
        data: &DataDir,
        opened: &[(GroupId, OpenedGroup)],
        doubts: &[String],
    ) -> Result<bool, ClusterError> {
        let mut seeds = self.config.join.clone();
        if let Some((_, control)) = opened.iter().find(|(g, _)| *g == CONTROL_GROUP) {
            seeds.extend(known_members(control));
        }
        seeds.retain(|s| *s != self.config.advertise);
        seeds.sort();
        seeds.dedup();
        tracing::error!(
            ?doubts,
            ?seeds,
            "this node's copy may lack writes it had acknowledged: it joins again as a new member and copies its partitions from its peers"
        );
        match self.join(&seeds).await {
            Ok(id) => {
                data.forget_all().await?;
                self.joined(id).await?;
                self.keep_identity()?;
                Ok(true)
            }
            Err(e) => {
                tracing::error!(error = %e, "no member admitted this node: it resumes with its copy as it is");
                Ok(false)
            }
        }
    }

    /// A group's log and state machine as its files left them.
    fn reopen(
        &self,
        mut opened: OpenedGroup,
        machine: Machine,
    ) -> Result<(GroupLog, GroupSm), ClusterError> {
        let sm = GroupSm::with_files(
            machine,
            self.config.partition,
            Some(Arc::clone(&opened.files)),
        );
        if let Ok(Some(bytes)) = std::mem::replace(&mut opened.snapshot, Ok(None)) {
            sm.restore(&bytes).map_err(|why| {
                ClusterError::Raft(format!("{}: snapshot: {why}", opened.files.dir().display()))
            })?;
        }
        Ok((GroupLog::reopened(&mut opened), sm))
    }

    /// With a data directory, keeps who this node is now that it has joined.
    pub(super) fn keep_identity(&self) -> Result<(), ClusterError> {
        if let Some(data) = &self.config.data {
            data.save_identity(&Identity {
                node_id: self.id(),
                cluster_id: self.peers.cluster(),
            })?;
        }
        Ok(())
    }
}

/// Member addresses the control group's files name (its snapshot's nodes and the joins
/// in its log), to join through when no `--join` was given.
fn known_members(control: &OpenedGroup) -> Vec<String> {
    let mut addrs = Vec::new();
    if let Ok(Some(bytes)) = &control.snapshot {
        let sm = GroupSm::new(
            Machine::Control(ClusterState::default()),
            Default::default(),
        );
        if sm.restore(bytes).is_ok() {
            if let Machine::Control(state) = &sm.read().machine {
                addrs.extend(state.nodes.values().map(|n| n.addr.clone()));
            }
        }
    }
    for entry in &control.entries {
        if let EntryPayload::Normal(GroupCommand::Control(
            ControlCommand::Init { addr, .. } | ControlCommand::Join { addr },
        )) = &entry.payload
        {
            addrs.push(addr.clone());
        }
    }
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(damage: Damage) -> Cut {
        Cut {
            path: "p00001/log/00000000000000000000.seg".into(),
            at: 100,
            damage,
            removed_segments: 0,
        }
    }

    #[test]
    fn only_a_torn_tail_under_always_leaves_the_copy_trusted() {
        use FsyncPolicy::*;
        assert_eq!(lossy(Ok(()), None, EverySec), None);
        assert_eq!(lossy(Ok(()), Some(&cut(Damage::Torn)), Always), None);
        for policy in [EverySec, Never] {
            let why = lossy(Ok(()), Some(&cut(Damage::Torn)), policy).unwrap();
            assert!(why.contains("Torn"), "{why}");
        }
        for damage in [Damage::Checksum, Damage::Length(1 << 40)] {
            assert!(lossy(Ok(()), Some(&cut(damage)), Always).is_some());
        }
        let why = lossy(Err("snapshot is damaged"), None, Always).unwrap();
        assert!(why.contains("snapshot refused"), "{why}");
    }
}
