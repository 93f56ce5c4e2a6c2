//! Coming back from a data directory: a node that finds its identity there resumes as
//! the same member, every group it held reopened from its files, instead of
//! bootstrapping or joining. Raft does the rest: each group's replica applies its log
//! after its snapshot as its leader commits, and catches up on what it missed from the
//! leader's log (or a snapshot, if the leader has purged that far). A node the control
//! leader marked down meanwhile asks to be back (`liveness`).
//!
//! ```text
//! start ─▶ no data dir, or no identity in it ─▶ clear leftovers; bootstrap | join; keep identity
//!       └▶ identity ─▶ open control + every group on disk ─▶ serve
//! open group: log (damaged tail cut) + vote + snapshot
//!       snapshot refused (damaged) ─▶ empty state, vote kept, no votes cast until
//!                                     applied past the log it had
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{lock, ClusterError, ClusterNode};
use crate::cluster::control::ClusterState;
use crate::cluster::durable::{DataDir, Identity};
use crate::cluster::log_store::GroupLog;
use crate::cluster::raft_types::{GroupId, CONTROL_GROUP};
use crate::cluster::state_machine::{GroupSm, Machine};
use crate::partition::Partition;

impl ClusterNode {
    /// Resumes from the data directory, if it holds an identity; false if this node
    /// must bootstrap or join (leftover groups of an unfinished start are removed).
    pub(super) async fn resume(&self) -> Result<bool, ClusterError> {
        let Some(data) = self.config.data.clone() else {
            return Ok(false);
        };
        let Some(identity) = data.identity()? else {
            data.clear_groups().await?;
            return Ok(false);
        };
        self.me.store(identity.node_id, Ordering::Relaxed);
        self.peers.set_cluster(identity.cluster_id);
        let groups = data.groups()?;
        let (log, sm) = self
            .reopen(
                &data,
                CONTROL_GROUP,
                Machine::Control(ClusterState::default()),
            )
            .await?;
        let raft = self.start_raft(CONTROL_GROUP, log, sm.clone()).await?;
        let _ = self.control.set((raft, sm));
        let mut partitions = 0;
        for g in groups.into_iter().filter(|g| *g != CONTROL_GROUP) {
            let machine = Machine::Partition(Box::new(Partition::new(self.config.partition)));
            let (log, sm) = self.reopen(&data, g, machine).await?;
            self.host(g, log, sm).await?;
            partitions += 1;
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

    /// A group's log and state machine as its files left them.
    async fn reopen(
        &self,
        data: &DataDir,
        group: GroupId,
        machine: Machine,
    ) -> Result<(GroupLog, GroupSm), ClusterError> {
        let mut opened = data.open_group(group).await?;
        let sm = GroupSm::with_files(
            machine,
            self.config.partition,
            Some(Arc::clone(&opened.files)),
        );
        let restored = match std::mem::replace(&mut opened.snapshot, Ok(None)) {
            Ok(Some(bytes)) => sm.restore(&bytes),
            Ok(None) => Ok(()),
            Err(damaged) => Err(damaged),
        };
        if let Err(why) = restored {
            let had = opened
                .entries
                .last()
                .map(|e| e.log_id.index)
                .or(opened.purged.map(|p| p.index))
                .unwrap_or(0);
            tracing::error!(
                group,
                dir = %opened.files.dir().display(),
                %why,
                "snapshot refused: the replica starts empty and catches up from its peers, casting no vote until it has applied entry {had}"
            );
            opened.files.discard_log_and_snapshot().await?;
            opened.entries.clear();
            opened.purged = None;
            sm.refuse_votes_through(had);
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

impl ClusterNode {
    /// Whether this node's replica of `group` must not vote yet (its snapshot was refused
    /// on start and it has not caught up).
    pub(super) fn refuses_votes(&self, group: GroupId) -> bool {
        if group == CONTROL_GROUP {
            return self.control.get().is_some_and(|(_, sm)| sm.refuses_votes());
        }
        self.group(group).is_some_and(|g| g.refuses_votes())
    }
}
