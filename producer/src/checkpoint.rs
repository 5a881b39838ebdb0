//! The positions of a tenant's streams, stored as JSON values in the compacted checkpoint topic
//! (key `<tenant>/snapshot` or `<tenant>/activity`) in the same transaction as the raw events
//! they cover. There is no local state: a restarted producer reads these back.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Version of the checkpoint format written by this producer.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Checkpoint key of a tenant's snapshot stream.
pub fn snapshot_key(tenant: &str) -> String {
    format!("{tenant}/snapshot")
}

/// Checkpoint key of a tenant's activity stream.
pub fn activity_key(tenant: &str) -> String {
    format!("{tenant}/activity")
}

/// Which collection a snapshot scan is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `/applications` (first: it names the groups whose members are expanded).
    Applications,
    /// `/groups`.
    Groups,
    /// `/users?filter=memberOfGroups[id eq "…"]` for each access-control group. Before the
    /// users, so that a reader has a user's access groups when the user arrives.
    Memberships,
    /// `/users` (last).
    Users,
    /// Every page was read; only `sync_completed` remains.
    Done,
}

/// Entities written so far in a sync, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Users.
    pub user: u64,
    /// Groups.
    pub group: u64,
    /// Memberships.
    pub group_membership: u64,
    /// Applications.
    pub application: u64,
}

/// Where an unfinished scan stands: the next request to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPosition {
    /// Collection being read.
    pub phase: Phase,
    /// The `next` URL to fetch, verbatim; `None` = the phase's first page.
    pub cursor: Option<String>,
    /// Groups named by applications' access control (filled during the applications phase).
    pub membership_groups: BTreeSet<String>,
    /// Index into `membership_groups` (sorted) of the group being expanded.
    pub membership_index: usize,
}

impl ScanPosition {
    /// The start of a scan.
    pub fn start() -> Self {
        Self {
            phase: Phase::Applications,
            cursor: None,
            membership_groups: BTreeSet::new(),
            membership_index: 0,
        }
    }

    /// The position after a page whose `next` link is `next`.
    pub fn advance(&self, next: Option<String>) -> Self {
        let mut pos = self.clone();
        if next.is_some() {
            pos.cursor = next;
            return pos;
        }
        pos.cursor = None;
        pos.phase = match self.phase {
            Phase::Applications => Phase::Groups,
            Phase::Groups if self.membership_groups.is_empty() => Phase::Users,
            Phase::Groups => {
                pos.membership_index = 0;
                Phase::Memberships
            }
            Phase::Memberships if self.membership_index + 1 < self.membership_groups.len() => {
                pos.membership_index += 1;
                Phase::Memberships
            }
            Phase::Memberships => Phase::Users,
            Phase::Users | Phase::Done => Phase::Done,
        };
        pos
    }

    /// The group being expanded in the memberships phase.
    pub fn membership_group(&self) -> Option<&String> {
        self.membership_groups.iter().nth(self.membership_index)
    }
}

/// A sync that has started but not completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgress {
    /// The sync's id.
    pub sync_id: String,
    /// When it started (ms since the epoch).
    pub started_at_ms: i64,
    /// Where it stands.
    pub position: ScanPosition,
    /// Entities written so far.
    pub counts: Counts,
}

/// A completed sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    /// The sync's id.
    pub sync_id: String,
    /// Start (ms since the epoch).
    pub started_at_ms: i64,
    /// End (ms since the epoch).
    pub completed_at_ms: i64,
}

/// The snapshot stream's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCheckpoint {
    /// Format version.
    pub version: u32,
    /// The environment the positions belong to; another one resets them.
    pub environment_id: String,
    /// The last completed sync.
    pub last_completed: Option<Completed>,
    /// The sync under way.
    pub in_progress: Option<InProgress>,
}

/// The activity stream's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityCheckpoint {
    /// Format version.
    pub version: u32,
    /// The environment the position belongs to.
    pub environment_id: String,
    /// Every activity recorded before this instant (ms since the epoch) has been written.
    pub window_end_ms: i64,
    /// Ids of activities recorded within the overlap before `window_end_ms`: the next window
    /// re-reads that span and drops these.
    pub overlap_ids: BTreeSet<String>,
    /// Every activity recorded since this instant (ms since the epoch) has been written: the
    /// first polling position, moved forward past a gap. Only whole days after it have their
    /// PingOne sign-on counts read. `None` in checkpoints of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_from_ms: Option<i64>,
    /// SHA-256 (hex) of the last PingOne sign-on counts written, with the days they cover:
    /// counts that did not change are not written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signons_sha256: Option<String>,
}

/// Decodes a checkpoint value; an unreadable or foreign one is reported, never trusted.
///
/// # Errors
/// A description when the JSON does not match or the version is unknown.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if v.version != CHECKPOINT_VERSION {
        return Err(format!("unknown checkpoint version {}", v.version));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_walks_every_phase_and_group() {
        let mut pos = ScanPosition::start();
        pos.membership_groups.insert("g2".into());
        pos.membership_groups.insert("g1".into());
        let p = pos.advance(Some("https://h/apps?cursor=1".into()));
        assert_eq!(
            (p.phase, p.cursor.as_deref()),
            (Phase::Applications, Some("https://h/apps?cursor=1"))
        );
        let p = p.advance(None);
        assert_eq!((p.phase, p.cursor.as_deref()), (Phase::Groups, None));
        let p = p.advance(None);
        assert_eq!(p.phase, Phase::Memberships);
        assert_eq!(p.membership_group().map(String::as_str), Some("g1"));
        let p = p.advance(None);
        assert_eq!(p.membership_group().map(String::as_str), Some("g2"));
        let p = p.advance(None);
        assert_eq!(p.phase, Phase::Users);
        assert_eq!(p.advance(None).phase, Phase::Done);
    }

    #[test]
    fn users_phase_ends_the_scan_without_access_groups() {
        let p = ScanPosition::start()
            .advance(None)
            .advance(None)
            .advance(None);
        assert_eq!(p.phase, Phase::Done);
    }

    #[test]
    fn checkpoints_round_trip_and_reject_unknown_versions() {
        let c = ActivityCheckpoint {
            version: CHECKPOINT_VERSION,
            environment_id: "e".into(),
            window_end_ms: 5,
            overlap_ids: ["a".to_string()].into_iter().collect(),
            covered_from_ms: Some(1),
            signons_sha256: Some("ab".into()),
        };
        let bytes = serde_json::to_vec(&c).unwrap();
        assert_eq!(decode::<ActivityCheckpoint>(&bytes).unwrap(), c);
        // A checkpoint of an earlier version, without the sign-on fields, still reads.
        let old = br#"{"version":1,"environment_id":"e","window_end_ms":5,"overlap_ids":[]}"#;
        let c = decode::<ActivityCheckpoint>(old).unwrap();
        assert_eq!((c.covered_from_ms, c.signons_sha256), (None, None));
        assert!(decode::<ActivityCheckpoint>(br#"{"version":99}"#).is_err());
        assert!(decode::<ActivityCheckpoint>(b"garbage").is_err());
    }
}
