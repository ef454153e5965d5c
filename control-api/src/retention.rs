//! Raw recorded tracks past their room's retention: a room's owner may keep a
//! recording's track files only so many days after its first finished mixdown (the
//! episode and stems are what a podcast needs; the raw tracks are large). One node at a
//! time sweeps, under a lease; each recording's track files are deleted from the store,
//! then the recording is marked (its manifest and mixdowns stay). A store that fails
//! leaves the recording unmarked, to be swept again.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::auth::now_millis;
use crate::hub::Task;
use crate::state::AppState;
use crate::store::retention::{DueTracks, RetentionStore};
use crate::store::{Millis, Store};

const LEASE: &str = "track-retention";
/// Recordings one sweep handles; the next sweep goes on.
const BATCH: i64 = 50;

/// Sweeps every `every` while the node has an object store.
pub fn start(st: &AppState, every: Duration) -> Task {
    let (stop, mut rx) = watch::channel(false);
    let st = st.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = rx.changed() => return,
            }
            if st.objects.is_none() {
                continue;
            }
            let ttl = (every * 3).as_millis() as i64;
            match st
                .db
                .take_lease(LEASE, &st.node_id, now_millis(), ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(error = %e, "track retention: the lease could not be read");
                    continue;
                }
            }
            if let Err(e) = sweep(&st, now_millis()).await {
                warn!(error = %e, "track retention sweep failed; it runs again");
            }
        }
    });
    Task::new(stop, task)
}

/// The object keys of a recording's track files: its manifest's `tracks[].file`, among
/// the objects it stored.
pub fn track_keys(due: &DueTracks) -> (Vec<String>, Vec<String>) {
    let objects: Vec<String> = due
        .objects
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_default();
    let manifest: Value = due
        .manifest
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(Value::Null);
    let tracks: Vec<String> = manifest["tracks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["file"].as_str())
        .map(|f| format!("{}/{}/{f}", due.sfu_room, due.id))
        .collect();
    objects.into_iter().partition(|k| tracks.contains(k))
}

/// One sweep at `now`: how many recordings lost their tracks.
pub async fn sweep(st: &AppState, now: Millis) -> Result<usize, String> {
    let Some(store) = st.objects.clone() else {
        return Ok(0);
    };
    let due = st
        .db
        .tracks_due(now, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    let mut swept = 0;
    for rec in due {
        let (tracks, kept) = track_keys(&rec);
        for key in &tracks {
            store
                .delete(key)
                .await
                .map_err(|e| format!("deleting {key}: {e}"))?;
        }
        let kept = serde_json::to_string(&kept).expect("keys serialize");
        if st
            .db
            .mark_tracks_deleted(&rec.id, &kept, tracks.len() as i64, now)
            .await
            .map_err(|e| e.to_string())?
        {
            info!(recording = %rec.id, files = tracks.len(), "raw tracks deleted: past the room's retention");
            swept += 1;
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_manifests_tracks_go() {
        let due = DueTracks {
            id: "r1".into(),
            sfu_room: "room".into(),
            objects: Some(
                r#"["room/r1/a.ogg","room/r1/b.mkv","room/r1/manifest.json","room/r1/mixdown/j/episode.opus"]"#
                    .into(),
            ),
            manifest: Some(r#"{"tracks":[{"file":"a.ogg"},{"file":"b.mkv"},{"file":"never-stored.ogg"}]}"#.into()),
        };
        let (tracks, kept) = track_keys(&due);
        assert_eq!(tracks, ["room/r1/a.ogg", "room/r1/b.mkv"]);
        assert_eq!(
            kept,
            ["room/r1/manifest.json", "room/r1/mixdown/j/episode.opus"]
        );
        let none = DueTracks {
            manifest: None,
            ..due
        };
        assert!(
            track_keys(&none).0.is_empty(),
            "no manifest: nothing is taken for a track"
        );
    }
}
