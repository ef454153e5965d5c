//! The `Store` contract, run against both backends: every scenario below is one generic
//! function, instantiated once on a fresh SQLite file (`sqlite::*`) and once on a fresh
//! PostgreSQL database (`postgres::*`).
//!
//! Run: `cargo test -p control-api --test store`. PostgreSQL must be reachable (see
//! `common/mod.rs`); the `postgres::*` tests fail, not skip, when it is not.

mod common;

use control_api::store::oidc::{OidcIdentity, OidcLogin, OidcStore, PendingLink};
use control_api::store::podcasts::{Episode, Marker, PodcastStore, Show};
use control_api::store::postgres::PgStore;
use control_api::store::retention::{DAY_MS, RetentionStore};
use control_api::store::sqlite::SqliteStore;
use control_api::store::{
    Capabilities, Job, JobChange, LibraryQuery, LibraryTrack, Mail, Millis, NewDevice, NewUser,
    NodeRow, OutboxEvent, Pairing, PlayRow, Presence, Recorded, Recording, RecordingChange,
    RefreshRecord, Role, RoomSettings, Store, StoreError, SyncCounts, TrackMeta, User,
};

const HOUR: Millis = 3_600_000;
const T0: Millis = 1_700_000_000_000;

/// Instantiates each scenario for both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (path, _dir) = common::fresh_sqlite_path();
                    let store = SqliteStore::connect(&path).await.expect("open SQLite");
                    store.migrate().await.expect("migrate");
                    super::$name(&store).await;
                    store.pool().close().await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (url, _db) = common::fresh_pg_url().await;
                    let store = PgStore::connect(&url).await.expect("connect PostgreSQL");
                    store.migrate().await.expect("migrate");
                    super::$name(&store).await;
                    store.pool().close().await;
                }
            )*
        }
    };
}

on_both_backends!(
    migrate_is_idempotent,
    users,
    refresh_rotation_and_family_revoke,
    refresh_revoke_user_and_device,
    refresh_mark_used_race,
    password_reset,
    mail_outbox,
    mail_unsent_oldest_first,
    devices_crud_and_isolation,
    pairing,
    pairing_claim_race,
    rooms,
    room_members,
    upload_bytes_are_counted_per_owner,
    library_upsert_counts,
    library_delete,
    library_search,
    library_pagination_and_order,
    library_isolation,
    library_follows_device_deletion,
    outbox_order_and_publish_marks,
    presence_writes_its_events_in_the_same_transaction,
    presence_sockets_and_expiry,
    now_playing_with_its_event,
    relay_lease_has_one_holder,
    recordings_move_once_with_their_events,
    a_recording_continues_on_another_node,
    jobs_are_claimed_by_one_worker_and_move_with_their_events,
    nodes_beat_drain_and_leave,
    a_room_has_one_home_until_its_node_dies,
    a_rooms_revocation_says_why,
    listening_history_and_its_statistics,
    podcasts_shows_episodes_and_markers,
    oidc_logins_identities_and_pending_links,
    raw_tracks_are_due_the_rooms_days_after_the_first_mixdown,
);

/// A room's retention counts its days from the recording's first finished mixdown:
/// not due a moment before, due from then on, once; a room without one keeps its
/// tracks, and clearing the setting keeps them again.
async fn raw_tracks_are_due_the_rooms_days_after_the_first_mixdown<S: Store + RetentionStore>(
    s: &S,
) {
    for (id, room) in [("r1", "room"), ("r2", "kept")] {
        s.create_recording(&recording(id, room, T0), ev(&format!("c-{id}"), room, T0))
            .await
            .unwrap();
        let uploaded = RecordingChange {
            status: "uploaded".into(),
            stopped_at: Some(T0 + 10),
            uploaded_at: Some(T0 + 20),
            manifest: Some("{}".into()),
            objects: Some(format!(r#"["{room}/{id}/a.ogg"]"#)),
            ..RecordingChange::default()
        };
        assert!(
            s.change_recording(id, &["recording"], uploaded, vec![])
                .await
                .unwrap()
        );
        let mut mix = job(&format!("mix-{id}"), T0 + 30);
        mix.kind = "mixdown".into();
        mix.recording_id = Some(id.into());
        assert!(s.create_job(&mix, vec![]).await.unwrap());
        s.claim_job(&mix.id, "w1", T0 + 40, T0 + 1000)
            .await
            .unwrap()
            .unwrap();
        let done = JobChange {
            status: "completed".into(),
            percent: Some(100),
            ..JobChange::default()
        };
        assert!(
            s.change_job(&mix.id, "w1", done, T0 + HOUR, vec![])
                .await
                .unwrap()
        );
    }
    s.set_track_retention("id-of-room", Some(3), T0)
        .await
        .unwrap();
    assert_eq!(s.track_retention("id-of-room").await.unwrap(), Some(3));
    assert_eq!(s.track_retention("id-of-kept").await.unwrap(), None);

    let mixed = T0 + HOUR;
    let due = |now: Millis| async move {
        s.tracks_due(now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    assert!(
        due(mixed + 3 * DAY_MS - 1).await.is_empty(),
        "a moment early"
    );
    let at = mixed + 3 * DAY_MS;
    assert_eq!(due(at).await, ["r1"]);
    let r = &s.tracks_due(at, 10).await.unwrap()[0];
    assert_eq!(
        (r.sfu_room.as_str(), r.objects.as_deref()),
        ("room", Some(r#"["room/r1/a.ogg"]"#))
    );

    assert!(s.mark_tracks_deleted("r1", "[]", 1, at).await.unwrap());
    assert!(
        !s.mark_tracks_deleted("r1", "[]", 1, at + 1).await.unwrap(),
        "once"
    );
    assert_eq!(s.tracks_deleted_at("r1").await.unwrap(), Some(at));
    assert_eq!(s.tracks_deleted_at("r2").await.unwrap(), None);
    assert_eq!(
        s.recording("r1").await.unwrap().unwrap().objects.as_deref(),
        Some("[]")
    );
    assert!(
        due(at + 30 * DAY_MS).await.is_empty(),
        "r2's room keeps its tracks"
    );

    // A setting for the other room, then cleared: kept again.
    s.set_track_retention("id-of-kept", Some(1), T0)
        .await
        .unwrap();
    assert_eq!(due(at).await, ["r2"]);
    s.set_track_retention("id-of-kept", None, T0).await.unwrap();
    assert!(due(at + 30 * DAY_MS).await.is_empty());
}

/// A login is taken once and not after it expires; an identity belongs to one
/// account, and an account has one of each provider; a pending link outlives a wrong
/// password (it is looked up, not taken) until it is deleted or expires.
async fn oidc_logins_identities_and_pending_links<S: Store + OidcStore>(s: &S) {
    let login = |hash: &str, expires_at: Millis| OidcLogin {
        state_hash: hash.into(),
        provider: "p".into(),
        nonce: "n".into(),
        verifier: "v".into(),
        link_user_id: None,
        return_to: "/".into(),
        expires_at,
    };
    s.insert_oidc_login(&login("a", T0 + 600_000))
        .await
        .unwrap();
    s.insert_oidc_login(&login("old", T0 - 1)).await.unwrap();
    assert_eq!(
        s.take_oidc_login("a", T0).await.unwrap(),
        Some(login("a", T0 + 600_000))
    );
    assert_eq!(
        s.take_oidc_login("a", T0).await.unwrap(),
        None,
        "taken once"
    );
    assert_eq!(s.take_oidc_login("old", T0).await.unwrap(), None, "expired");
    let id = |provider: &str, subject: &str, user: &str| OidcIdentity {
        provider: provider.into(),
        subject: subject.into(),
        user_id: user.into(),
        email: Some(format!("{subject}@x.test")),
        linked_at: T0,
    };
    s.link_identity(&id("https://a.test", "s1", "u1"))
        .await
        .unwrap();
    assert!(is_conflict(
        s.link_identity(&id("https://a.test", "s1", "u2")).await,
        "oidc identity"
    ));
    assert!(is_conflict(
        s.link_identity(&id("https://a.test", "s2", "u1")).await,
        "oidc identity"
    ));
    s.link_identity(&id("https://b.test", "s1", "u1"))
        .await
        .unwrap();
    assert_eq!(
        s.oidc_identity("https://a.test", "s1")
            .await
            .unwrap()
            .unwrap()
            .user_id,
        "u1"
    );
    assert!(
        s.oidc_identity("https://b.test", "s2")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.user_identities("u1").await.unwrap().len(), 2);
    assert!(s.unlink_identity("u1", "https://a.test").await.unwrap());
    assert!(!s.unlink_identity("u1", "https://a.test").await.unwrap());
    let pending = PendingLink {
        token_hash: "t".into(),
        provider: "p".into(),
        subject: "s9".into(),
        email: "e@x.test".into(),
        user_id: "u1".into(),
        return_to: "/".into(),
        expires_at: T0 + 1000,
    };
    s.insert_pending_link(&pending).await.unwrap();
    assert_eq!(
        s.pending_link("t", T0).await.unwrap(),
        Some(pending.clone())
    );
    assert_eq!(
        s.pending_link("t", T0).await.unwrap(),
        Some(pending),
        "not taken by a look"
    );
    assert_eq!(
        s.pending_link("t", T0 + 1001).await.unwrap(),
        None,
        "expired"
    );
    assert!(s.delete_pending_link("t").await.unwrap());
    assert_eq!(s.pending_link("t", T0).await.unwrap(), None);
}

/// Shows belong to their owner; episodes to their show (deleted with it); the feed
/// lists what is published and due, newest first; markers come back by time.
async fn podcasts_shows_episodes_and_markers<S: Store + PodcastStore>(s: &S) {
    let show = |id: &str, owner: &str, at: Millis| Show {
        id: id.into(),
        owner_id: owner.into(),
        title: format!("Show {id}"),
        description: "About things".into(),
        author: "Ann".into(),
        language: "en".into(),
        category: "Music".into(),
        explicit: true,
        artwork_key: None,
        artwork_type: None,
        created_at: at,
        updated_at: at,
        episodes: 0,
    };
    let episode = |id: &str, show: &str, status: &str, publish_at: Option<Millis>| Episode {
        id: id.into(),
        show_id: show.into(),
        guid: format!("guid-{id}"),
        title: format!("Episode {id}"),
        description: String::new(),
        status: status.into(),
        publish_at,
        season: Some(1),
        episode: None,
        source_job: "job".into(),
        audio_key: format!("podcasts/u1/{show}/{id}/audio.opus"),
        audio_bytes: 1234,
        audio_type: "audio/ogg".into(),
        duration_ms: 60_000,
        chapters: r#"[{"start_ms":0,"title":"Intro"}]"#.into(),
        created_at: publish_at.unwrap_or(T0),
        updated_at: T0,
    };
    s.create_show(&show("a", "u1", T0)).await.unwrap();
    s.create_show(&show("b", "u1", T0 + 1)).await.unwrap();
    s.create_show(&show("c", "u2", T0 + 2)).await.unwrap();
    let mine: Vec<String> = s
        .shows("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(mine, ["b", "a"]);
    assert!(s.show("u2", "a").await.unwrap().is_none(), "another's show");
    assert_eq!(s.public_show("c").await.unwrap().unwrap().owner_id, "u2");
    let mut a = s.show("u1", "a").await.unwrap().unwrap();
    assert!(a.explicit);
    a.title = "Renamed".into();
    a.explicit = false;
    assert!(s.update_show(&a).await.unwrap());
    assert_eq!(
        s.set_artwork(&a, "podcasts/u1/a/artwork.png", "image/png", T0 + 5)
            .await
            .unwrap(),
        Some(None)
    );
    assert_eq!(
        s.set_artwork(&a, "podcasts/u1/a/artwork.jpg", "image/jpeg", T0 + 6)
            .await
            .unwrap(),
        Some(Some("podcasts/u1/a/artwork.png".into())),
        "the key it replaced"
    );
    let mut stolen = a.clone();
    stolen.owner_id = "u2".into();
    assert!(!s.update_show(&stolen).await.unwrap(), "another's update");
    let a = s.show("u1", "a").await.unwrap().unwrap();
    assert_eq!(
        (a.title.as_str(), a.explicit, a.artwork_type.as_deref()),
        ("Renamed", false, Some("image/jpeg"))
    );
    assert_eq!(
        s.set_artwork(&stolen, "k", "image/png", T0).await.unwrap(),
        None
    );

    s.create_episode(&episode("draft", "a", "draft", None))
        .await
        .unwrap();
    s.create_episode(&episode("old", "a", "published", Some(T0 + HOUR)))
        .await
        .unwrap();
    s.create_episode(&episode("new", "a", "published", Some(T0 + 2 * HOUR)))
        .await
        .unwrap();
    s.create_episode(&episode("due", "a", "published", Some(T0 + 5 * HOUR)))
        .await
        .unwrap();
    s.create_episode(&episode("other", "b", "published", Some(T0)))
        .await
        .unwrap();
    assert!(
        s.create_episode(&episode("x", "a", "draft", None))
            .await
            .is_ok()
    );
    let mut dup = episode("y", "a", "draft", None);
    dup.guid = "guid-old".into();
    assert!(s.create_episode(&dup).await.is_err(), "a guid is unique");
    assert_eq!(s.show("u1", "a").await.unwrap().unwrap().episodes, 5);
    let feed = |now| async move {
        s.feed_episodes("a", now, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(feed(T0 + 3 * HOUR).await, ["new", "old"]);
    assert_eq!(feed(T0 + 5 * HOUR).await, ["due", "new", "old"]);
    let mut e = s.episode("a", "old").await.unwrap().unwrap();
    assert_eq!(e.chapter_list()[0].title, "Intro");
    e.status = "draft".into();
    e.publish_at = None;
    e.title = "Edited".into();
    e.season = None;
    assert!(s.update_episode(&e).await.unwrap());
    let back = s.episode("a", "old").await.unwrap().unwrap();
    assert_eq!(
        (back.title.as_str(), back.season, back.guid.as_str()),
        ("Edited", None, "guid-old")
    );
    assert_eq!(feed(T0 + 5 * HOUR).await, ["due", "new"]);
    assert!(
        s.episode("b", "old").await.unwrap().is_none(),
        "through another show"
    );
    assert!(s.delete_episode("a", "new").await.unwrap());
    assert!(!s.delete_episode("a", "new").await.unwrap());
    assert!(!s.delete_show("u2", "a").await.unwrap(), "another's delete");
    assert!(s.delete_show("u1", "a").await.unwrap());
    assert!(
        s.episodes("a").await.unwrap().is_empty(),
        "episodes go with their show"
    );
    assert_eq!(s.episodes("b").await.unwrap().len(), 1);

    for (id, at) in [("m2", T0 + 20), ("m1", T0 + 10)] {
        s.add_marker(&Marker {
            id: id.into(),
            recording_id: "rec".into(),
            at_ms: at,
            title: id.into(),
            created_by: "host".into(),
            created_at: at,
        })
        .await
        .unwrap();
    }
    let ms: Vec<String> = s
        .markers("rec")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ms, ["m1", "m2"]);
    assert!(s.markers("other").await.unwrap().is_empty());
}

/// Every node reads each room's epoch and why it last moved on, for the rooms it
/// serves, in one query.
async fn a_rooms_revocation_says_why<S: Store>(s: &S) {
    let host = user(s, "host@example.com").await;
    let a = s
        .create_room(&host.id, "a", settings(8, true, "anyone"), T0)
        .await
        .unwrap();
    let b = s
        .create_room(&host.id, "b", settings(8, true, "anyone"), T0)
        .await
        .unwrap();
    assert_eq!(s.room_revocations(&[]).await.unwrap(), vec![]);
    let ids = vec![a.id.clone(), b.id.clone(), "no-such-room".to_owned()];
    let mut want = vec![
        (a.id.clone(), 0, String::new()),
        (b.id.clone(), 0, String::new()),
    ];
    want.sort();
    assert_eq!(s.room_revocations(&ids).await.unwrap(), want);
    assert_eq!(s.bump_room_epoch(&a.id, "reset").await.unwrap(), 1);
    assert_eq!(
        s.bump_room_epoch(&a.id, "who_may_join_changed")
            .await
            .unwrap(),
        2
    );
    let got = s.room_revocations(&ids).await.unwrap();
    assert!(
        got.contains(&(a.id.clone(), 2, "who_may_join_changed".to_owned())),
        "{got:?}"
    );
    assert!(got.contains(&(b.id.clone(), 0, String::new())), "{got:?}");
    assert_eq!(
        got.len(),
        2,
        "a room that does not exist is not listed: {got:?}"
    );
}

/// Plays are stored with their device's cursor, kept at their longest listening,
/// listed newest first and summed per track, artist and album by the database, for
/// their user only.
async fn listening_history_and_its_statistics<S: Store>(s: &S) {
    const DAY: Millis = 24 * HOUR;
    let u = user(s, "listener@example.com").await;
    let other = user(s, "other@example.com").await;
    let phone = device(s, &u.id, "Pixel").await;
    let tablet = device(s, &u.id, "Tab").await;
    let others = device(s, &other.id, "Theirs").await;
    let play = |id: &str, track: &str, artist: &str, album: &str, at: Millis, ms: i64| PlayRow {
        id: id.to_owned(),
        device_id: String::new(),
        track_id: format!("{track}-id"),
        title: track.to_owned(),
        artist: artist.to_owned(),
        album: album.to_owned(),
        duration_ms: 200_000,
        started_at: at,
        listened_ms: ms,
    };
    assert_eq!(s.listening_cursor(&phone).await.unwrap(), None);
    // The same song from two devices is one track; a play written again keeps its
    // longest listening, whichever order the writes come in. Each write moves the
    // cursor's version on, and one made over a version that moved changes nothing.
    let stored = |cursor: &'static str, version: Option<i64>, plays: Vec<PlayRow>| {
        let phone = phone.clone();
        let uid = u.id.clone();
        async move {
            s.record_listening(&uid, &phone, cursor, version, &plays, T0)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        stored(
            "{\"c\":1}",
            None,
            vec![
                play("p1", "Song", "Band", "Record", T0 - 2 * DAY, 60_000),
                play("p2", "Song", "Band", "Record", T0 - 3 * DAY, 30_000),
            ]
        )
        .await,
        Recorded::Stored
    );
    let p1 = |ms| vec![play("p1", "Song", "Band", "Record", T0 - 2 * DAY, ms)];
    assert_eq!(stored("{\"c\":0}", None, p1(99_000)).await, Recorded::Stale);
    assert_eq!(
        stored("{\"c\":2}", Some(1), p1(90_000)).await,
        Recorded::Stored
    );
    assert_eq!(
        stored("{\"c\":0}", Some(1), p1(99_000)).await,
        Recorded::Stale
    );
    assert_eq!(
        stored("{\"c\":3}", Some(2), p1(40_000)).await,
        Recorded::Stored
    );
    assert_eq!(
        s.listening_cursor(&phone).await.unwrap(),
        Some(("{\"c\":3}".to_owned(), 3))
    );
    let mut on_tablet = play("p3", "Song", "Band", "Record", T0 - DAY, 120_000);
    on_tablet.track_id = "tablet-song".into();
    s.record_listening(
        &u.id,
        &tablet,
        "{}",
        None,
        &[
            on_tablet,
            play("p4", "Other", "Band", "Live", T0 - 20 * DAY, 180_000),
            // Two plays that began in the same millisecond.
            play("p5", "Hymn", "", "", T0 - 400 * DAY, 45_000),
            play("p6", "Hymn", "", "", T0 - 400 * DAY, 45_000),
        ],
        T0,
    )
    .await
    .unwrap();
    // Another user's device, and a device that is not the user's: nothing stored.
    s.record_listening(
        &other.id,
        &others,
        "{}",
        None,
        &[play("q1", "Song", "Band", "Record", T0 - DAY, 99_000)],
        T0,
    )
    .await
    .unwrap();
    assert_eq!(
        s.record_listening(
            &u.id,
            &others,
            "{}",
            Some(1),
            &[play("x1", "Stolen", "Band", "Record", T0, 99_000)],
            T0
        )
        .await
        .unwrap(),
        Recorded::NotOwned
    );
    assert_eq!(
        s.record_listening(&u.id, &others, "{}", None, &[], T0)
            .await
            .unwrap(),
        Recorded::NotOwned
    );
    assert_eq!(
        s.listening_cursor(&others).await.unwrap(),
        Some(("{}".to_owned(), 1))
    );

    let week = s.listening_stats(&u.id, T0 - 7 * DAY, 10).await.unwrap();
    assert_eq!((week.plays, week.listened_ms), (3, 240_000), "{week:?}");
    assert_eq!(week.tracks.len(), 1, "{week:?}");
    let song = &week.tracks[0];
    assert_eq!(
        (
            song.title.as_str(),
            song.artist.as_str(),
            song.album.as_str(),
            song.plays,
            song.listened_ms
        ),
        ("Song", "Band", "Record", 3, 240_000)
    );
    assert!(["Song-id", "tablet-song"].contains(&song.track_id.as_str()));
    assert_eq!(week.artists.len(), 1);
    assert_eq!(
        (week.artists[0].artist.as_str(), week.artists[0].plays),
        ("Band", 3)
    );
    assert_eq!(
        (week.albums[0].album.as_str(), week.albums[0].plays),
        ("Record", 3)
    );

    let year = s.listening_stats(&u.id, T0 - 365 * DAY, 10).await.unwrap();
    assert_eq!((year.plays, year.listened_ms), (4, 420_000));
    let titles: Vec<_> = year
        .tracks
        .iter()
        .map(|t| (t.title.as_str(), t.plays))
        .collect();
    assert_eq!(titles, [("Song", 3), ("Other", 1)]);
    assert_eq!(year.artists[0].listened_ms, 420_000);
    let albums: Vec<_> = year
        .albums
        .iter()
        .map(|a| (a.album.as_str(), a.plays))
        .collect();
    assert_eq!(albums, [("Record", 3), ("Live", 1)]);

    // All time: the track with no artist or album is a track, and no artist or album.
    let all = s.listening_stats(&u.id, Millis::MIN, 1).await.unwrap();
    assert_eq!(all.plays, 6);
    assert_eq!(all.tracks.len(), 1, "limited to 1");
    assert_eq!(all.artists.len(), 1);
    let every = s.listening_stats(&u.id, Millis::MIN, 10).await.unwrap();
    assert!(
        every
            .tracks
            .iter()
            .any(|t| t.title == "Hymn" && t.artist.is_empty())
    );
    assert!(every.artists.iter().all(|a| !a.artist.is_empty()));
    assert!(every.albums.iter().all(|a| !a.album.is_empty()));

    let theirs = s.listening_stats(&other.id, Millis::MIN, 10).await.unwrap();
    assert_eq!((theirs.plays, theirs.listened_ms), (1, 99_000));
    let nobody = s.listening_stats("nobody", Millis::MIN, 10).await.unwrap();
    assert_eq!(nobody, Default::default());

    let recent = s.recent_plays(&u.id, (Millis::MAX, ""), 3).await.unwrap();
    let ids: Vec<_> = recent.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["p3", "p1", "p2"]);
    assert_eq!(
        (recent[1].listened_ms, recent[1].device_id.as_str()),
        (90_000, phone.as_str())
    );
    let next = s
        .recent_plays(&u.id, (recent[2].started_at, &recent[2].id), 2)
        .await
        .unwrap();
    let ids: Vec<_> = next.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["p4", "p6"]);
    // The page boundary falls between two plays of one millisecond: neither is lost.
    let last = s
        .recent_plays(&u.id, (next[1].started_at, &next[1].id), 2)
        .await
        .unwrap();
    let ids: Vec<_> = last.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["p5"]);

    // A removed device takes its cursor with it; its plays stay in the history.
    assert!(s.delete_device(&u.id, &phone).await.unwrap());
    assert_eq!(s.listening_cursor(&phone).await.unwrap(), None);
    assert_eq!(
        s.listening_stats(&u.id, Millis::MIN, 10)
            .await
            .unwrap()
            .plays,
        6
    );
}

// ---------------------------------------------------------------- fixtures

async fn user<S: Store>(s: &S, email: &str) -> User {
    s.create_user(NewUser {
        email: email.to_owned(),
        display_name: format!("{email} name"),
        password_hash: "$argon2id$fake".to_owned(),
        role: Role::User,
        email_verified: false,
    })
    .await
    .expect("create user")
}

async fn device<S: Store>(s: &S, user_id: &str, name: &str) -> String {
    s.create_device(
        NewDevice {
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            kind: "phone".to_owned(),
            capabilities: Capabilities {
                mic: true,
                camera: false,
                screen: false,
            },
        },
        T0,
    )
    .await
    .expect("create device")
    .id
}

fn refresh(user_id: &str, family: &str, hash: &str, device_id: Option<&str>) -> RefreshRecord {
    RefreshRecord {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_owned(),
        family_id: family.to_owned(),
        token_hash: hash.to_owned(),
        device_id: device_id.map(str::to_owned),
        created_at: T0,
        expires_at: T0 + 24 * HOUR,
        used_at: None,
        revoked_at: None,
    }
}

fn pairing_row(user_id: &str, code: &str, expires_at: Millis) -> Pairing {
    Pairing {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_owned(),
        code: code.to_owned(),
        created_at: T0,
        expires_at,
        attempts: 0,
        claimed_at: None,
        device_id: None,
    }
}

fn track(client_id: &str, title: &str, artist: &str, album: &str) -> TrackMeta {
    TrackMeta {
        client_id: client_id.to_owned(),
        title: title.to_owned(),
        artist: artist.to_owned(),
        album: album.to_owned(),
        duration_ms: 200_000,
        codec: "aac".to_owned(),
        size_bytes: 4_000_000,
    }
}

fn settings(max: i64, auto_record: bool, policy: &str) -> RoomSettings {
    RoomSettings {
        max_participants: max,
        auto_record,
        publish_policy: policy.to_owned(),
        access: "private".to_owned(),
        share_key: "k".repeat(43),
    }
}

fn query(q: Option<&str>, device_id: Option<&str>, limit: i64, offset: i64) -> LibraryQuery {
    LibraryQuery {
        q: q.map(str::to_owned),
        device_id: device_id.map(str::to_owned),
        limit,
        offset,
    }
}

fn ids(tracks: &[LibraryTrack]) -> Vec<&str> {
    tracks.iter().map(|t| t.meta.client_id.as_str()).collect()
}

fn is_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) -> bool {
    match r {
        Err(StoreError::Conflict(w)) => w == what,
        other => panic!("expected Conflict({what:?}), got {other:?}"),
    }
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.get_version_num() == 4)
}

// ---------------------------------------------------------------- scenarios

async fn migrate_is_idempotent<S: Store>(s: &S) {
    s.migrate().await.expect("second migrate");
    assert_eq!(s.count_users().await.unwrap(), 0);
}

async fn users<S: Store>(s: &S) {
    assert_eq!(s.count_users().await.unwrap(), 0);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let alice = user(s, "alice@example.com").await;
    assert!(is_uuid(&alice.id));
    assert_eq!(alice.email, "alice@example.com");
    assert_eq!(alice.display_name, "alice@example.com name");
    assert_eq!(alice.role, Role::User);
    assert!(alice.created_at >= before && alice.created_at < before + 60_000);

    // duplicate email
    let dup = s
        .create_user(NewUser {
            email: "alice@example.com".to_owned(),
            display_name: "Other".to_owned(),
            password_hash: "x".to_owned(),
            role: Role::Admin,
            email_verified: false,
        })
        .await;
    assert!(is_conflict(dup, "email"));

    let bob = s
        .create_user(NewUser {
            email: "bob@example.com".to_owned(),
            display_name: "Bob".to_owned(),
            password_hash: "h".to_owned(),
            role: Role::Admin,
            email_verified: false,
        })
        .await
        .unwrap();

    assert_eq!(
        s.user_by_email("alice@example.com").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(s.user_by_email("ALICE@example.com").await.unwrap(), None);
    assert_eq!(s.user_by_email("nobody@example.com").await.unwrap(), None);
    assert_eq!(s.user_by_id(&bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(s.user_by_id("no-such-id").await.unwrap(), None);
    assert_eq!(s.count_users().await.unwrap(), 2);
    let mut listed: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .collect();
    listed.sort();
    assert_eq!(listed, ["alice@example.com", "bob@example.com"]);

    s.set_password(&alice.id, "$argon2id$new").await.unwrap();
    let a = s.user_by_id(&alice.id).await.unwrap().unwrap();
    assert_eq!(a.password_hash, "$argon2id$new");
    assert_eq!(
        s.user_by_id(&bob.id).await.unwrap().unwrap().password_hash,
        "h"
    );

    assert!(s.set_role(&alice.id, Role::Admin).await.unwrap());
    assert_eq!(
        s.user_by_id(&alice.id).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert!(!s.set_role("no-such-id", Role::Admin).await.unwrap());
}

async fn refresh_rotation_and_family_revoke<S: Store>(s: &S) {
    let u = user(s, "r@example.com").await;
    let a = refresh(&u.id, "fam1", "hash-a", None);
    s.insert_refresh(a.clone()).await.unwrap();
    assert_eq!(s.refresh_by_hash("hash-a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.refresh_by_hash("hash-zzz").await.unwrap(), None);

    // duplicate token hash
    let dup = s
        .insert_refresh(refresh(&u.id, "fam9", "hash-a", None))
        .await;
    assert!(is_conflict(dup, "refresh token"));

    // rotation: the first use wins, the second loses
    assert!(s.mark_refresh_used(&a.id, T0 + 10).await.unwrap());
    assert!(!s.mark_refresh_used(&a.id, T0 + 20).await.unwrap());
    let used = s.refresh_by_hash("hash-a").await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(T0 + 10));
    assert_eq!(used.revoked_at, None);
    assert!(!s.mark_refresh_used("no-such-id", T0).await.unwrap());

    let b = refresh(&u.id, "fam1", "hash-b", None);
    s.insert_refresh(b.clone()).await.unwrap();
    let other = refresh(&u.id, "fam2", "hash-c", None);
    s.insert_refresh(other.clone()).await.unwrap();

    // reuse detected: revoke the family (both tokens, used or not)
    assert_eq!(s.revoke_family("fam1", T0 + 30).await.unwrap(), 2);
    assert_eq!(s.revoke_family("fam1", T0 + 40).await.unwrap(), 0);
    let b_now = s.refresh_by_hash("hash-b").await.unwrap().unwrap();
    assert_eq!(b_now.revoked_at, Some(T0 + 30));
    assert_eq!(b_now.used_at, None);
    // a revoked token cannot be used
    assert!(!s.mark_refresh_used(&b.id, T0 + 50).await.unwrap());
    // the other family is untouched
    let o = s.refresh_by_hash("hash-c").await.unwrap().unwrap();
    assert_eq!(o.revoked_at, None);
    assert!(s.mark_refresh_used(&other.id, T0 + 60).await.unwrap());
}

async fn refresh_revoke_user_and_device<S: Store>(s: &S) {
    let u1 = user(s, "u1@example.com").await;
    let u2 = user(s, "u2@example.com").await;
    let phone = device(s, &u1.id, "phone").await;
    let tablet = device(s, &u1.id, "tablet").await;

    s.insert_refresh(refresh(&u1.id, "f1", "h1", None))
        .await
        .unwrap();
    s.insert_refresh(refresh(&u1.id, "f2", "h2", Some(&phone)))
        .await
        .unwrap();
    s.insert_refresh(refresh(&u1.id, "f3", "h3", Some(&tablet)))
        .await
        .unwrap();
    s.insert_refresh(refresh(&u2.id, "f4", "h4", None))
        .await
        .unwrap();
    let stored = s.refresh_by_hash("h2").await.unwrap().unwrap();
    assert_eq!(stored.device_id.as_deref(), Some(phone.as_str()));

    // device revoke: only that device's tokens
    assert_eq!(s.revoke_device_tokens(&phone, T0 + 1).await.unwrap(), 1);
    assert_eq!(s.revoke_device_tokens(&phone, T0 + 2).await.unwrap(), 0);
    let h = |hash: &'static str| async move { s.refresh_by_hash(hash).await.unwrap().unwrap() };
    assert_eq!(h("h2").await.revoked_at, Some(T0 + 1));
    assert_eq!(h("h1").await.revoked_at, None);
    assert_eq!(h("h3").await.revoked_at, None);

    // user revoke: every live token of u1 (h1, h3), nothing of u2
    assert_eq!(s.revoke_user_tokens(&u1.id, T0 + 5).await.unwrap(), 2);
    assert_eq!(s.revoke_user_tokens(&u1.id, T0 + 6).await.unwrap(), 0);
    assert_eq!(h("h1").await.revoked_at, Some(T0 + 5));
    assert_eq!(h("h2").await.revoked_at, Some(T0 + 1), "not re-stamped");
    assert_eq!(h("h3").await.revoked_at, Some(T0 + 5));
    assert_eq!(h("h4").await.revoked_at, None);

    // deleting a device deletes its device-scoped tokens
    assert!(s.delete_device(&u1.id, &tablet).await.unwrap());
    assert_eq!(s.refresh_by_hash("h3").await.unwrap(), None);
    assert!(s.refresh_by_hash("h1").await.unwrap().is_some());
}

async fn refresh_mark_used_race<S: Store>(s: &S) {
    let u = user(s, "race@example.com").await;
    let rec = refresh(&u.id, "fam", "hash-race", None);
    s.insert_refresh(rec.clone()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (s, id) = (s.clone(), rec.id.clone());
        tasks.push(tokio::spawn(async move {
            s.mark_refresh_used(&id, T0 + i).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one concurrent rotation wins");
}

async fn password_reset<S: Store>(s: &S) {
    let u = user(s, "reset@example.com").await;
    s.insert_password_reset(&u.id, "reset-1", T0 + HOUR)
        .await
        .unwrap();
    let dup = s.insert_password_reset(&u.id, "reset-1", T0 + HOUR).await;
    assert!(is_conflict(dup, "password reset token"));

    assert_eq!(s.take_password_reset("unknown", T0).await.unwrap(), None);
    // single use
    assert_eq!(
        s.take_password_reset("reset-1", T0 + 10).await.unwrap(),
        Some(u.id.clone())
    );
    assert_eq!(
        s.take_password_reset("reset-1", T0 + 20).await.unwrap(),
        None
    );

    // expiry: valid until expires_at (exclusive)
    s.insert_password_reset(&u.id, "reset-2", T0 + HOUR)
        .await
        .unwrap();
    assert_eq!(
        s.take_password_reset("reset-2", T0 + HOUR).await.unwrap(),
        None
    );
    assert_eq!(
        s.take_password_reset("reset-2", T0 + 2 * HOUR)
            .await
            .unwrap(),
        None
    );
    // refused attempts do not consume the token
    assert_eq!(
        s.take_password_reset("reset-2", T0 + HOUR - 1)
            .await
            .unwrap(),
        Some(u.id.clone())
    );
}

async fn mail_outbox<S: Store>(s: &S) {
    let mail = |id: &str, at: Millis| Mail {
        id: id.to_owned(),
        to_addr: format!("{id}@example.com"),
        subject: format!("subject {id}"),
        body: format!("body {id}\nline 2"),
        created_at: at,
        sent_at: None,
    };
    s.insert_mail(mail("m2", T0 + 2)).await.unwrap();
    s.insert_mail(mail("m1", T0 + 1)).await.unwrap();
    // same time: the later insert counts as newer
    for id in ["m3a", "m3b", "m3c", "m3d", "m3e", "m3f"] {
        s.insert_mail(mail(id, T0 + 3)).await.unwrap();
    }

    let all = s.list_mail(10).await.unwrap();
    let order: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        order,
        ["m3f", "m3e", "m3d", "m3c", "m3b", "m3a", "m2", "m1"],
        "newest first"
    );
    assert_eq!(all[7], mail("m1", T0 + 1));

    let two = s.list_mail(2).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].id, "m3f");
    assert!(s.list_mail(0).await.unwrap().is_empty());

    s.mark_mail_sent("m2", T0 + 100).await.unwrap();
    let all = s.list_mail(10).await.unwrap();
    let m2 = all.iter().find(|m| m.id == "m2").unwrap();
    assert_eq!(m2.sent_at, Some(T0 + 100));
    assert!(
        all.iter()
            .filter(|m| m.id != "m2")
            .all(|m| m.sent_at.is_none())
    );
}

async fn mail_unsent_oldest_first<S: Store>(s: &S) {
    let mail = |id: &str, at: Millis| Mail {
        id: id.to_owned(),
        to_addr: format!("{id}@example.com"),
        subject: format!("subject {id}"),
        body: format!("body {id}"),
        created_at: at,
        sent_at: None,
    };
    assert!(s.unsent_mail(10).await.unwrap().is_empty());
    s.insert_mail(mail("b", T0 + 2)).await.unwrap();
    s.insert_mail(mail("a", T0 + 1)).await.unwrap();
    // same time: the earlier insert counts as older
    for id in ["c1", "c2", "c3"] {
        s.insert_mail(mail(id, T0 + 3)).await.unwrap();
    }
    s.insert_mail(Mail {
        sent_at: Some(T0 + 4),
        ..mail("done", T0)
    })
    .await
    .unwrap();

    let ids = |v: Vec<Mail>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.unsent_mail(10).await.unwrap()),
        ["a", "b", "c1", "c2", "c3"],
        "oldest first, sent ones left out"
    );
    assert_eq!(s.unsent_mail(10).await.unwrap()[0], mail("a", T0 + 1));
    assert_eq!(ids(s.unsent_mail(2).await.unwrap()), ["a", "b"]);
    assert!(s.unsent_mail(0).await.unwrap().is_empty());

    s.mark_mail_sent("a", T0 + 10).await.unwrap();
    s.mark_mail_sent("c2", T0 + 10).await.unwrap();
    assert_eq!(ids(s.unsent_mail(10).await.unwrap()), ["b", "c1", "c3"]);
    assert_eq!(
        s.list_mail(10).await.unwrap().len(),
        6,
        "sent mail stays listed"
    );
}

async fn devices_crud_and_isolation<S: Store>(s: &S) {
    let u1 = user(s, "d1@example.com").await;
    let u2 = user(s, "d2@example.com").await;
    let caps = Capabilities {
        mic: true,
        camera: true,
        screen: false,
    };
    let d = s
        .create_device(
            NewDevice {
                user_id: u1.id.clone(),
                name: "Pixel".to_owned(),
                kind: "phone".to_owned(),
                capabilities: caps,
            },
            T0,
        )
        .await
        .unwrap();
    assert!(is_uuid(&d.id));
    assert_eq!(d.user_id, u1.id);
    assert_eq!(d.capabilities, caps);
    assert_eq!(d.created_at, T0);
    assert_eq!(d.last_seen, None);
    let d2 = device(s, &u1.id, "Browser").await;
    let other = device(s, &u2.id, "Theirs").await;

    assert_eq!(s.device(&u1.id, &d.id).await.unwrap(), Some(d.clone()));
    let mine: Vec<String> = s
        .list_devices(&u1.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(mine.len(), 2);
    assert!(mine.contains(&d.id) && mine.contains(&d2));
    assert_eq!(s.list_devices(&u2.id).await.unwrap().len(), 1);

    // another user's id never returns or changes anything
    assert_eq!(s.device(&u2.id, &d.id).await.unwrap(), None);
    assert!(!s.rename_device(&u2.id, &d.id, "hijacked").await.unwrap());
    assert!(
        s.update_presence(Some(&u2.id), &d.id, &heartbeat(None), T0 + 5, |_| vec![])
            .await
            .unwrap()
            .is_none()
    );
    assert!(!s.delete_device(&u2.id, &d.id).await.unwrap());
    assert_eq!(s.device(&u1.id, &d.id).await.unwrap(), Some(d.clone()));
    assert_eq!(s.device(&u1.id, &other).await.unwrap(), None);

    // rename
    assert!(s.rename_device(&u1.id, &d.id, "Pixel 9").await.unwrap());
    assert_eq!(
        s.device(&u1.id, &d.id).await.unwrap().unwrap().name,
        "Pixel 9"
    );
    assert!(!s.rename_device(&u1.id, "no-such-id", "x").await.unwrap());

    // heartbeat: last_seen always, capabilities only when given
    let c = s
        .update_presence(Some(&u1.id), &d.id, &heartbeat(None), T0 + 10, |_| vec![])
        .await
        .unwrap()
        .unwrap();
    assert!(c.came_online() && !c.capabilities_changed());
    let t = s.device(&u1.id, &d.id).await.unwrap().unwrap();
    assert_eq!(t.last_seen, Some(T0 + 10));
    assert_eq!(t.capabilities, caps);
    assert!(t.online);
    let new_caps = Capabilities {
        mic: false,
        camera: false,
        screen: true,
    };
    let c = s
        .update_presence(
            Some(&u1.id),
            &d.id,
            &heartbeat(Some(new_caps)),
            T0 + 20,
            |_| vec![],
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!c.came_online() && c.capabilities_changed());
    let t = s.device(&u1.id, &d.id).await.unwrap().unwrap();
    assert_eq!(t.last_seen, Some(T0 + 20));
    assert_eq!(t.capabilities, new_caps);

    // delete
    assert!(s.delete_device(&u1.id, &d.id).await.unwrap());
    assert!(!s.delete_device(&u1.id, &d.id).await.unwrap());
    assert_eq!(s.device(&u1.id, &d.id).await.unwrap(), None);
    assert_eq!(s.list_devices(&u1.id).await.unwrap().len(), 1);
    assert_eq!(s.list_devices(&u2.id).await.unwrap().len(), 1);
}

async fn pairing<S: Store>(s: &S) {
    let u = user(s, "p@example.com").await;
    let u2 = user(s, "p2@example.com").await;
    let p = pairing_row(&u.id, "123456", T0 + 600_000);
    s.create_pairing(p.clone()).await.unwrap();

    assert_eq!(s.pairing_by_code("123456").await.unwrap(), Some(p.clone()));
    assert_eq!(s.pairing_by_code("654321").await.unwrap(), None);
    assert_eq!(s.pairing(&u.id, &p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(s.pairing(&u2.id, &p.id).await.unwrap(), None);

    // the same code again clashes, even for another user; the caller retries
    let clash = s
        .create_pairing(pairing_row(&u2.id, "123456", T0 + 600_000))
        .await;
    assert!(is_conflict(clash, "pairing code"));

    // A wrong code counts against every open pairing (this one is the only one).
    assert_eq!(s.count_wrong_pairing_guess(T0).await.unwrap(), 1);
    assert_eq!(s.count_wrong_pairing_guess(T0 + 1).await.unwrap(), 1);

    // claim once
    let phone = device(s, &u.id, "phone").await;
    assert!(s.claim_pairing(&p.id, &phone, T0 + 1000).await.unwrap());
    assert!(!s.claim_pairing(&p.id, &phone, T0 + 2000).await.unwrap());
    let claimed = s.pairing(&u.id, &p.id).await.unwrap().unwrap();
    assert_eq!(claimed.claimed_at, Some(T0 + 1000));
    assert_eq!(claimed.device_id.as_deref(), Some(phone.as_str()));
    assert_eq!(claimed.attempts, 2);
    assert_eq!(
        s.count_wrong_pairing_guess(T0 + 2000).await.unwrap(),
        0,
        "a claimed pairing no longer counts guesses"
    );

    // expired: cannot be claimed (at or after expires_at)
    let late = pairing_row(&u.id, "777777", T0 + 600_000);
    s.create_pairing(late.clone()).await.unwrap();
    assert!(
        !s.claim_pairing(&late.id, &phone, T0 + 600_000)
            .await
            .unwrap()
    );
    assert!(
        !s.claim_pairing(&late.id, &phone, T0 + 700_000)
            .await
            .unwrap()
    );
    assert_eq!(
        s.count_wrong_pairing_guess(T0 + 600_000).await.unwrap(),
        0,
        "nor does an expired one"
    );
    let still = s.pairing(&u.id, &late.id).await.unwrap().unwrap();
    assert_eq!(still.claimed_at, None);
    assert_eq!(still.attempts, 0);
    assert_eq!(still.device_id, None);
    assert!(!s.claim_pairing("no-such-id", &phone, T0).await.unwrap());
}

async fn pairing_claim_race<S: Store>(s: &S) {
    let u = user(s, "pr@example.com").await;
    let p = pairing_row(&u.id, "424242", T0 + HOUR);
    s.create_pairing(p.clone()).await.unwrap();
    let mut devices = Vec::new();
    for i in 0..8 {
        devices.push(device(s, &u.id, &format!("phone {i}")).await);
    }
    let mut tasks = Vec::new();
    for d in devices {
        let (s, id) = (s.clone(), p.id.clone());
        tasks.push(tokio::spawn(async move {
            s.claim_pairing(&id, &d, T0 + 1).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one concurrent claim wins");
}

async fn rooms<S: Store>(s: &S) {
    let u1 = user(s, "room1@example.com").await;
    let u2 = user(s, "room2@example.com").await;
    let r = s
        .create_room(&u1.id, "jam", settings(8, false, "owner"), T0)
        .await
        .unwrap();
    assert!(is_uuid(&r.id));
    assert_eq!(r.owner_id, u1.id);
    assert_eq!(r.name, "jam");
    assert_eq!(r.max_participants, 8);
    assert!(!r.auto_record);
    assert_eq!(r.publish_policy, "owner");
    assert_eq!(r.created_at, T0);

    // names are unique per owner
    let taken = s
        .create_room(&u1.id, "jam", settings(2, true, "anyone"), T0)
        .await;
    assert!(is_conflict(taken, "room name"));
    let theirs = s
        .create_room(&u2.id, "jam", settings(2, true, "anyone"), T0)
        .await
        .unwrap();
    assert_ne!(theirs.id, r.id);
    s.create_room(&u2.id, "other", settings(2, true, "anyone"), T0 + 1)
        .await
        .unwrap();
    s.create_room(&u1.id, "band", settings(4, true, "anyone"), T0 + 2)
        .await
        .unwrap();

    let names = |rooms: Vec<control_api::store::Room>| -> Vec<String> {
        let mut v: Vec<String> = rooms.into_iter().map(|r| r.name).collect();
        v.sort();
        v
    };
    assert_eq!(names(s.list_rooms(&u1.id).await.unwrap()), ["band", "jam"]);
    assert_eq!(names(s.list_rooms(&u2.id).await.unwrap()), ["jam", "other"]);
    assert_eq!(
        s.room_by_owner_name(&u1.id, "jam").await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        s.room_by_owner_name(&u2.id, "jam").await.unwrap(),
        Some(theirs.clone())
    );
    assert_eq!(s.room_by_owner_name(&u1.id, "nope").await.unwrap(), None);
    assert_eq!(s.room_by_owner_name(&u1.id, "other").await.unwrap(), None);
    assert_eq!(s.room_by_id(&r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(s.room_by_id("nope").await.unwrap(), None);

    // only the owner may change or delete
    assert_eq!(
        s.update_room(&u2.id, "band", settings(99, true, "anyone"))
            .await
            .unwrap(),
        None
    );
    assert!(!s.delete_room(&u2.id, "band").await.unwrap());
    assert_eq!(s.room_by_id(&r.id).await.unwrap(), Some(r.clone()));

    let updated = s
        .update_room(&u1.id, "jam", settings(16, true, "anyone"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.id, r.id);
    assert_eq!(updated.created_at, r.created_at);
    assert_eq!(updated.max_participants, 16);
    assert!(updated.auto_record);
    assert_eq!(updated.publish_policy, "anyone");
    assert_eq!(s.room_by_id(&r.id).await.unwrap(), Some(updated));
    assert_eq!(
        s.room_by_id(&theirs.id).await.unwrap(),
        Some(theirs.clone()),
        "another owner's room of the same name is untouched"
    );
    assert_eq!(
        s.update_room(&u1.id, "nope", settings(1, false, "owner"))
            .await
            .unwrap(),
        None
    );

    assert!(s.delete_room(&u1.id, "jam").await.unwrap());
    assert!(!s.delete_room(&u1.id, "jam").await.unwrap());
    assert_eq!(s.room_by_id(&r.id).await.unwrap(), None);
    assert_eq!(s.room_by_id(&theirs.id).await.unwrap(), Some(theirs));
    // the name is free again
    s.create_room(&u1.id, "jam", settings(2, false, "owner"), T0 + 3)
        .await
        .unwrap();
}

async fn room_members<S: Store>(s: &S) {
    let owner = user(s, "host@example.com").await;
    let guest = user(s, "guest@example.com").await;
    let other = user(s, "other@example.com").await;
    let room = s
        .create_room(&owner.id, "circle", settings(8, false, "owner"), T0)
        .await
        .unwrap();
    let m = s
        .invite_member(&room.id, "guest@example.com", T0 + 1)
        .await
        .unwrap();
    assert_eq!((m.status.as_str(), m.user_id.as_deref()), ("invited", None));
    // Inviting again changes nothing for someone who has not answered.
    let again = s
        .invite_member(&room.id, "guest@example.com", T0 + 2)
        .await
        .unwrap();
    assert_eq!(again, m);
    assert!(!s.is_member(&room.id, &guest.id).await.unwrap());
    let inv = s.invitations("guest@example.com").await.unwrap();
    assert_eq!(inv.len(), 1);
    assert_eq!(
        (inv[0].room_name.as_str(), inv[0].owner_name.as_str()),
        ("circle", "host@example.com name")
    );
    assert!(s.invitations("other@example.com").await.unwrap().is_empty());
    // Only the invited address answers.
    assert_eq!(
        s.answer_invitation(&m.id, "other@example.com", &other.id, true, T0 + 3)
            .await
            .unwrap(),
        None
    );
    assert!(!s.is_member(&room.id, &other.id).await.unwrap());
    let accepted = s
        .answer_invitation(&m.id, "guest@example.com", &guest.id, true, T0 + 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            accepted.status.as_str(),
            accepted.user_id.as_deref(),
            accepted.responded_at
        ),
        ("accepted", Some(guest.id.as_str()), Some(T0 + 3))
    );
    assert!(s.is_member(&room.id, &guest.id).await.unwrap());
    // Leaving (declining) ends membership; a new invite asks again.
    s.answer_invitation(&m.id, "guest@example.com", &guest.id, false, T0 + 4)
        .await
        .unwrap()
        .unwrap();
    assert!(!s.is_member(&room.id, &guest.id).await.unwrap());
    let asked = s
        .invite_member(&room.id, "guest@example.com", T0 + 5)
        .await
        .unwrap();
    assert_eq!(
        (asked.status.as_str(), asked.invited_at, asked.responded_at),
        ("invited", T0 + 5, None)
    );
    s.invite_member(&room.id, "new@example.com", T0 + 6)
        .await
        .unwrap();
    let emails: Vec<String> = s
        .room_members(&room.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.email)
        .collect();
    assert_eq!(emails, ["guest@example.com", "new@example.com"]);
    assert!(s.remove_member(&room.id, "new@example.com").await.unwrap());
    assert!(!s.remove_member(&room.id, "new@example.com").await.unwrap());
    // Deleting the room deletes its list.
    assert!(s.delete_room(&owner.id, "circle").await.unwrap());
    assert!(s.invitations("guest@example.com").await.unwrap().is_empty());
    assert!(s.room_members(&room.id).await.unwrap().is_empty());
}

async fn upload_bytes_are_counted_per_owner<S: Store>(s: &S) {
    let a = user(s, "bytes-a@example.com").await;
    let b = user(s, "bytes-b@example.com").await;
    let job = |id: &str, kind: &str, owner: &str, spec: serde_json::Value| {
        control_api::store::Job::queued(
            id.into(),
            kind,
            Some(owner.into()),
            None,
            spec.to_string(),
            T0,
        )
    };
    for j in [
        job(
            "j1",
            "transcode",
            &a.id,
            serde_json::json!({"source": {"bytes": 1000}}),
        ),
        job(
            "j2",
            "transcode",
            &a.id,
            serde_json::json!({"source": {"bytes": 2500}}),
        ),
        // Not counted: a mixdown, a size that is not a number, no size, another user's.
        job(
            "j3",
            "mixdown",
            &a.id,
            serde_json::json!({"source": {"bytes": 7}}),
        ),
        job(
            "j4",
            "transcode",
            &a.id,
            serde_json::json!({"source": {"bytes": "many"}}),
        ),
        job("j5", "transcode", &a.id, serde_json::json!({"input": "x"})),
        job(
            "j6",
            "transcode",
            &b.id,
            serde_json::json!({"source": {"bytes": 99}}),
        ),
    ] {
        s.create_job(&j, vec![]).await.unwrap();
    }
    assert_eq!(s.owned_counts(&a.id, T0).await.unwrap().upload_bytes, 3500);
    assert_eq!(s.owned_counts(&b.id, T0).await.unwrap().upload_bytes, 99);
}

async fn library_upsert_counts<S: Store>(s: &S) {
    let u = user(s, "lib@example.com").await;
    let d = device(s, &u.id, "phone").await;
    let a = track("a", "Alpha", "Artist", "Album");
    let b = track("b", "Beta", "Artist", "Album");
    let c = track("c", "Gamma", "Artist", "Album");

    let counts = s
        .upsert_tracks(&u.id, &d, &[a.clone(), b.clone(), c.clone()], T0)
        .await
        .unwrap();
    let expect = |inserted, updated, unchanged| SyncCounts {
        inserted,
        updated,
        unchanged,
        deleted: 0,
    };
    assert_eq!(counts, expect(3, 0, 0));

    let counts = s
        .upsert_tracks(&u.id, &d, &[a.clone(), b.clone(), c.clone()], T0 + 1)
        .await
        .unwrap();
    assert_eq!(counts, expect(0, 0, 3));

    let b2 = TrackMeta {
        duration_ms: b.duration_ms + 1,
        ..b.clone()
    };
    let c2 = TrackMeta {
        album: "Album (Deluxe)".into(),
        ..c.clone()
    };
    let e = track("e", "Epsilon", "Artist", "Album");
    let counts = s
        .upsert_tracks(
            &u.id,
            &d,
            &[a.clone(), b2.clone(), c2.clone(), e.clone()],
            T0 + 2,
        )
        .await
        .unwrap();
    assert_eq!(counts, expect(1, 2, 1));

    let all = s
        .list_tracks(&u.id, &query(None, None, 100, 0))
        .await
        .unwrap();
    let lib = |meta: &TrackMeta, updated_at| LibraryTrack {
        device_id: d.clone(),
        meta: meta.clone(),
        updated_at,
    };
    assert_eq!(
        all,
        [
            lib(&a, T0),
            lib(&b2, T0 + 2),
            lib(&e, T0 + 2),
            lib(&c2, T0 + 2)
        ],
        "stored fields, updated_at only moves on change, ordered by artist, album, title"
    );

    // every field takes part in the comparison
    let variants = [
        TrackMeta {
            title: "Alpha!".into(),
            ..a.clone()
        },
        TrackMeta {
            artist: "Artist!".into(),
            ..a.clone()
        },
        TrackMeta {
            album: "Album!".into(),
            ..a.clone()
        },
        TrackMeta {
            duration_ms: 1,
            ..a.clone()
        },
        TrackMeta {
            codec: "opus".into(),
            ..a.clone()
        },
        TrackMeta {
            size_bytes: 1,
            ..a.clone()
        },
    ];
    for (i, v) in variants.iter().enumerate() {
        let at = T0 + 10 + i as Millis;
        let counts = s
            .upsert_tracks(&u.id, &d, std::slice::from_ref(v), at)
            .await
            .unwrap();
        assert_eq!(counts, expect(0, 1, 0), "variant {i}");
    }

    // a batch naming one track twice: the later entry wins
    let counts = s
        .upsert_tracks(&u.id, &d, &[a.clone(), a.clone()], T0 + 20)
        .await
        .unwrap();
    assert_eq!(counts, expect(0, 1, 1));
    let empty = s.upsert_tracks(&u.id, &d, &[], T0 + 30).await.unwrap();
    assert_eq!(empty, SyncCounts::default());
    let got = s
        .list_tracks(&u.id, &query(Some("alpha"), None, 10, 0))
        .await
        .unwrap();
    assert_eq!(got, [lib(&a, T0 + 20)]);
}

async fn library_delete<S: Store>(s: &S) {
    let u1 = user(s, "del1@example.com").await;
    let u2 = user(s, "del2@example.com").await;
    let d = device(s, &u1.id, "phone").await;
    let tracks = [
        track("a", "A", "X", "Y"),
        track("b", "B", "X", "Y"),
        track("c", "C", "X", "Y"),
    ];
    s.upsert_tracks(&u1.id, &d, &tracks, T0).await.unwrap();
    let all = query(None, None, 100, 0);

    let del = |user: &str, ids: &[&str]| {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let user = user.to_owned();
        let d = d.clone();
        async move { s.delete_tracks(&user, &d, &ids).await.unwrap() }
    };
    assert_eq!(
        del(&u2.id, &["a", "b"]).await,
        0,
        "another user deletes nothing"
    );
    assert_eq!(del(&u1.id, &[]).await, 0);
    assert_eq!(del(&u1.id, &["a", "zzz"]).await, 1);
    assert_eq!(ids(&s.list_tracks(&u1.id, &all).await.unwrap()), ["b", "c"]);
    assert_eq!(del(&u1.id, &["a"]).await, 0);
    assert_eq!(del(&u1.id, &["b", "c"]).await, 2);
    assert!(s.list_tracks(&u1.id, &all).await.unwrap().is_empty());

    // after deletion the same client id syncs as new
    let counts = s
        .upsert_tracks(&u1.id, &d, &tracks[..1], T0 + 1)
        .await
        .unwrap();
    assert_eq!(counts.inserted, 1);
}

async fn library_search<S: Store>(s: &S) {
    let u = user(s, "search@example.com").await;
    let d1 = device(s, &u.id, "phone").await;
    let d2 = device(s, &u.id, "tablet").await;
    s.upsert_tracks(
        &u.id,
        &d1,
        &[
            track("t1", "Yesterday", "The Beatles", "Help!"),
            track("t2", "Ace of Spades", "Motörhead", "Ace of Spades"),
            track("t3", "100% Pure", "Someone", "Percent"),
            track("t4", "1000 Pure", "Someone", "Thousand"),
            track("t5", "snake_case song", "Coder", "Under_score"),
            track("t6", "Rebecca", "AC\\DC", "Live"),
        ],
        T0,
    )
    .await
    .unwrap();
    s.upsert_tracks(
        &u.id,
        &d2,
        &[track("t1", "Yesterday (Live)", "The Beatles", "Live")],
        T0,
    )
    .await
    .unwrap();

    let (uid, first) = (&u.id, &d1);
    let search = |q: &'static str, device: Option<String>| async move {
        let found = s
            .list_tracks(uid, &query(Some(q), device.as_deref(), 100, 0))
            .await
            .unwrap();
        let mut v: Vec<String> = found
            .iter()
            .map(|t| {
                format!(
                    "{}:{}",
                    if t.device_id == *first { "d1" } else { "d2" },
                    t.meta.client_id
                )
            })
            .collect();
        v.sort();
        v
    };
    let d1_only = Some(d1.clone());
    assert_eq!(search("BEATLES", d1_only.clone()).await, ["d1:t1"]);
    assert_eq!(search("beatles", None).await, ["d1:t1", "d2:t1"]);
    assert_eq!(search("yEsTeRdAy", None).await, ["d1:t1", "d2:t1"]);
    assert_eq!(search("help", None).await, ["d1:t1"], "album matches");
    assert_eq!(
        search("MOTÖRHEAD", None).await,
        ["d1:t2"],
        "non-ASCII case folding"
    );
    assert_eq!(search("spades", None).await, ["d1:t2"]);
    assert_eq!(search("0%", None).await, ["d1:t3"], "% is literal");
    assert_eq!(search("%", None).await, ["d1:t3"]);
    assert_eq!(search("e_c", None).await, ["d1:t5"], "_ is literal");
    assert_eq!(search("_", None).await, ["d1:t5"]);
    assert_eq!(
        search("c\\d", None).await,
        ["d1:t6"],
        "backslash is literal"
    );
    assert_eq!(search("\\", None).await, ["d1:t6"]);
    assert!(search("zzz", None).await.is_empty());
    assert_eq!(
        search("", None).await.len(),
        7,
        "empty query matches everything"
    );
    assert_eq!(search("live", None).await, ["d1:t6", "d2:t1"]);
    assert_eq!(search("live", Some(d2.clone())).await, ["d2:t1"]);

    // device filter without a query
    let on_d2 = s
        .list_tracks(&u.id, &query(None, Some(&d2), 100, 0))
        .await
        .unwrap();
    assert_eq!(ids(&on_d2), ["t1"]);
    assert_eq!(on_d2[0].meta.title, "Yesterday (Live)");
}

async fn library_pagination_and_order<S: Store>(s: &S) {
    let u = user(s, "page@example.com").await;
    let d = device(s, &u.id, "phone").await;
    s.upsert_tracks(
        &u.id,
        &d,
        &[
            track("p1", "Song B", "artist z", "Album"),
            track("p2", "Song A", "Artist a", "Album 2"),
            track("p3", "song a", "Artist A", "Album 1"),
            track("p4", "Song C", "artist a", "album 1"),
            track("p5", "Song", "Zed", ""),
            track("x2", "Same", "Same", "Same"),
            track("x1", "Same", "Same", "Same"),
        ],
        T0,
    )
    .await
    .unwrap();
    // case-insensitive artist, album, title; then exact text; then client id
    let expected = ["p3", "p4", "p2", "p1", "x1", "x2", "p5"];
    let all = s
        .list_tracks(&u.id, &query(None, None, 100, 0))
        .await
        .unwrap();
    assert_eq!(ids(&all), expected);

    let mut paged = Vec::new();
    for offset in (0..8).step_by(3) {
        let page = s
            .list_tracks(&u.id, &query(None, None, 3, offset))
            .await
            .unwrap();
        assert!(page.len() <= 3);
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let page = |limit, offset| {
        let u = u.id.clone();
        async move {
            let t = s
                .list_tracks(&u, &query(None, None, limit, offset))
                .await
                .unwrap();
            t.into_iter().map(|t| t.meta.client_id).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(2, 2).await, ["p2", "p1"]);
    assert_eq!(page(2, 6).await, ["p5"]);
    assert!(page(2, 7).await.is_empty());
    assert!(page(0, 0).await.is_empty(), "limit 0 returns nothing");
    assert!(page(-1, 0).await.is_empty(), "negative limit counts as 0");
    assert_eq!(page(1, -5).await, ["p3"], "negative offset counts as 0");
    let filtered = s
        .list_tracks(&u.id, &query(Some("song"), None, 2, 1))
        .await
        .unwrap();
    assert_eq!(
        ids(&filtered),
        ["p4", "p2"],
        "pagination applies after the filter"
    );
}

async fn library_isolation<S: Store>(s: &S) {
    let u1 = user(s, "iso1@example.com").await;
    let u2 = user(s, "iso2@example.com").await;
    let d1 = device(s, &u1.id, "phone 1").await;
    let d2 = device(s, &u2.id, "phone 2").await;
    let mine = [track("a", "Secret Song", "Private", "Mine")];
    s.upsert_tracks(&u1.id, &d1, &mine, T0).await.unwrap();
    s.upsert_tracks(&u2.id, &d2, &[track("a", "Public", "Other", "Theirs")], T0)
        .await
        .unwrap();
    let all = query(None, None, 100, 0);

    let theirs = s.list_tracks(&u2.id, &all).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].device_id, d2);
    assert!(
        s.list_tracks(&u2.id, &query(None, Some(&d1), 100, 0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.list_tracks(&u2.id, &query(Some("secret"), None, 100, 0))
            .await
            .unwrap()
            .is_empty()
    );

    // u2 cannot write into u1's device
    let hijack = s
        .upsert_tracks(&u2.id, &d1, &[track("a", "Overwritten", "x", "y")], T0 + 1)
        .await;
    assert!(
        hijack.is_err(),
        "upsert onto another user's device must fail"
    );
    let hijack = s
        .upsert_tracks(&u2.id, &d1, &[track("new", "Injected", "x", "y")], T0 + 1)
        .await;
    assert!(hijack.is_err());
    assert_eq!(
        s.delete_tracks(&u2.id, &d1, &["a".to_owned()])
            .await
            .unwrap(),
        0
    );
    let still = s.list_tracks(&u1.id, &all).await.unwrap();
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].meta, mine[0]);
    assert_eq!(still[0].updated_at, T0);
    assert!(
        s.upsert_tracks(&u1.id, "no-such-device", &mine, T0)
            .await
            .is_err()
    );
}

async fn library_follows_device_deletion<S: Store>(s: &S) {
    let u = user(s, "gone@example.com").await;
    let d1 = device(s, &u.id, "old phone").await;
    let d2 = device(s, &u.id, "new phone").await;
    s.upsert_tracks(
        &u.id,
        &d1,
        &[track("a", "A", "X", "Y"), track("b", "B", "X", "Y")],
        T0,
    )
    .await
    .unwrap();
    s.upsert_tracks(&u.id, &d2, &[track("a", "A", "X", "Y")], T0)
        .await
        .unwrap();
    let p = pairing_row(&u.id, "999999", T0 + HOUR);
    s.create_pairing(p.clone()).await.unwrap();
    assert!(s.claim_pairing(&p.id, &d1, T0 + 1).await.unwrap());

    assert!(s.delete_device(&u.id, &d1).await.unwrap());
    let left = s
        .list_tracks(&u.id, &query(None, None, 100, 0))
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].device_id, d2);
    assert!(
        s.list_tracks(&u.id, &query(None, Some(&d1), 100, 0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.upsert_tracks(&u.id, &d1, &[track("c", "C", "X", "Y")], T0 + 2)
            .await
            .is_err(),
        "no syncing into a deleted device"
    );
    // the pairing's history survives, without the dangling device reference
    let p_after = s.pairing(&u.id, &p.id).await.unwrap().unwrap();
    assert_eq!(p_after.claimed_at, Some(T0 + 1));
    assert_eq!(p_after.device_id, None);
}

#[test]
fn pg_url_helper_replaces_the_database() {
    use common::database_url;
    assert_eq!(
        database_url("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        database_url("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        database_url("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}

/// The forms `SqliteStore::connect` accepts, and the connection settings it applies.
#[tokio::test]
async fn sqlite_connect_forms_and_pragmas() {
    // in memory: one database shared by every call on the store
    let mem = SqliteStore::connect("sqlite::memory:").await.unwrap();
    mem.migrate().await.unwrap();
    user(&mem, "mem@example.com").await;
    for _ in 0..3 {
        assert_eq!(mem.count_users().await.unwrap(), 1);
    }
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(mem.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);

    // a plain path whose parent directories do not exist yet
    let dir = common::TempDir::new();
    let nested = dir.path().join("a/b/store.db");
    let store = SqliteStore::connect(nested.to_str().unwrap())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    user(&store, "file@example.com").await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    store.pool().close().await;
    assert!(nested.exists());

    // the same file through a URL: the data is there
    let url = format!("sqlite://{}", nested.display());
    let again = SqliteStore::connect(&url).await.unwrap();
    again.migrate().await.unwrap();
    assert!(
        again
            .user_by_email("file@example.com")
            .await
            .unwrap()
            .is_some()
    );
    again.pool().close().await;
}

// ---------------------------------------------------------------- events

fn heartbeat(capabilities: Option<Capabilities>) -> Presence {
    Presence::Heartbeat { capabilities }
}

fn ev(id: &str, key: &str, at: Millis) -> OutboxEvent {
    OutboxEvent {
        id: id.into(),
        topic: "device.status".into(),
        key: key.into(),
        payload: format!("{{\"id\":\"{id}\"}}"),
        created_at: at,
    }
}

fn event_ids(rows: &[control_api::store::OutboxRow]) -> Vec<&str> {
    rows.iter().map(|r| r.event.id.as_str()).collect()
}

async fn outbox_order_and_publish_marks<S: Store>(s: &S) {
    s.insert_events(&[ev("a", "k1", T0), ev("b", "k2", T0)])
        .await
        .unwrap();
    s.insert_events(&[ev("c", "k1", T0 + 1)]).await.unwrap();
    // A duplicate id is refused and nothing of that batch is written.
    assert!(is_conflict(
        s.insert_events(&[ev("d", "k1", T0 + 2), ev("a", "k1", T0 + 2)])
            .await,
        "event id"
    ));
    let rows = s.unpublished_events(10).await.unwrap();
    assert_eq!(event_ids(&rows), ["a", "b", "c"]);
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(rows[0].event, ev("a", "k1", T0));
    assert_eq!(
        event_ids(&s.unpublished_events(2).await.unwrap()),
        ["a", "b"]
    );
    assert_eq!(s.count_unpublished_events().await.unwrap(), 3);
    // Only the named rows are marked, whatever their neighbours.
    let marked = s
        .mark_events_published(&[rows[0].seq, rows[2].seq], T0 + 10)
        .await
        .unwrap();
    assert_eq!(marked, 2);
    assert_eq!(
        s.mark_events_published(&[rows[0].seq], T0 + 11)
            .await
            .unwrap(),
        0,
        "already published"
    );
    assert_eq!(event_ids(&s.unpublished_events(10).await.unwrap()), ["b"]);
    assert_eq!(s.mark_events_published(&[], T0).await.unwrap(), 0);
    // Retention removes published rows only.
    assert_eq!(s.purge_published_events(T0 + 11).await.unwrap(), 2);
    assert_eq!(s.count_unpublished_events().await.unwrap(), 1);
}

async fn presence_writes_its_events_in_the_same_transaction<S: Store>(s: &S) {
    let u = user(s, "p@example.com").await;
    let d = device(s, &u.id, "Phone").await;
    let c = s
        .update_presence(Some(&u.id), &d, &heartbeat(None), T0, |c| {
            assert!(c.came_online());
            vec![ev("online-1", &c.device.id, T0)]
        })
        .await
        .unwrap()
        .unwrap();
    assert!(c.device.online);
    assert_eq!(
        event_ids(&s.unpublished_events(10).await.unwrap()),
        ["online-1"]
    );
    // An event that cannot be written rolls the state change back.
    let r = s
        .update_presence(
            Some(&u.id),
            &d,
            &Presence::Expire {
                stale_before: T0 + 1,
            },
            T0 + 2,
            |_| vec![ev("online-1", &d, T0 + 2)],
        )
        .await;
    assert!(is_conflict(r, "event id"));
    assert!(
        s.device(&u.id, &d).await.unwrap().unwrap().online,
        "rolled back"
    );
    assert_eq!(s.count_unpublished_events().await.unwrap(), 1);
    // No device, no events.
    let none = s
        .update_presence(Some(&u.id), "nope", &heartbeat(None), T0, |_| {
            vec![ev("x", "nope", T0)]
        })
        .await
        .unwrap();
    assert!(none.is_none());
    assert_eq!(s.count_unpublished_events().await.unwrap(), 1);
}

async fn presence_sockets_and_expiry<S: Store>(s: &S) {
    let u = user(s, "q@example.com").await;
    let d = device(s, &u.id, "Phone").await;
    let connect = |c: &str| Presence::Connect {
        conn: c.into(),
        capabilities: None,
    };
    s.update_presence(Some(&u.id), &d, &connect("c1"), T0, |_| vec![])
        .await
        .unwrap();
    s.update_presence(Some(&u.id), &d, &connect("c2"), T0 + 1, |_| vec![])
        .await
        .unwrap();
    let old_closed = s
        .update_presence(
            Some(&u.id),
            &d,
            &Presence::Disconnect { conn: "c1".into() },
            T0 + 2,
            |_| vec![],
        )
        .await
        .unwrap()
        .unwrap();
    assert!(old_closed.device.online);
    assert_eq!(old_closed.device.control_conn.as_deref(), Some("c2"));
    // The sweeper finds it once its heartbeats are old, from any user.
    assert!(s.stale_online_devices(T0 + 1, 10).await.unwrap().is_empty());
    assert_eq!(
        s.stale_online_devices(T0 + 2, 10).await.unwrap(),
        vec![(u.id.clone(), d.clone())]
    );
    let expired = s
        .update_presence(
            None,
            &d,
            &Presence::Expire {
                stale_before: T0 + 2,
            },
            T0 + 3,
            |_| vec![],
        )
        .await
        .unwrap()
        .unwrap();
    assert!(expired.went_offline());
    assert_eq!(expired.device.control_conn, None);
    assert!(
        s.stale_online_devices(T0 + 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn now_playing_with_its_event<S: Store>(s: &S) {
    let u = user(s, "n@example.com").await;
    let other = user(s, "o@example.com").await;
    let d = device(s, &u.id, "Phone").await;
    assert!(
        s.record_now_playing(&u.id, &d, r#"{"status":"playing"}"#, T0, |n| ev(
            &format!("np{n}"),
            &d,
            T0
        ))
        .await
        .unwrap()
    );
    assert!(
        s.record_now_playing(&u.id, &d, r#"{"status":"paused"}"#, T0 + 5, |n| ev(
            &format!("np{n}"),
            &d,
            T0 + 5
        ))
        .await
        .unwrap()
    );
    assert!(
        !s.record_now_playing(&other.id, &d, "{}", T0, |_| ev("np3", &d, T0))
            .await
            .unwrap(),
        "another user's device"
    );
    assert_eq!(
        s.now_playing(&u.id).await.unwrap(),
        vec![(d.clone(), r#"{"status":"paused"}"#.to_owned(), T0 + 5)]
    );
    assert!(s.now_playing(&other.id).await.unwrap().is_empty());
    assert_eq!(
        event_ids(&s.unpublished_events(10).await.unwrap()),
        ["np1", "np2"]
    );
}

async fn relay_lease_has_one_holder<S: Store>(s: &S) {
    assert!(s.take_lease("relay", "a", T0, 1000).await.unwrap());
    assert!(!s.take_lease("relay", "b", T0 + 10, 1000).await.unwrap());
    assert!(
        s.take_lease("relay", "a", T0 + 500, 1000).await.unwrap(),
        "renewed"
    );
    assert!(
        !s.take_lease("relay", "b", T0 + 1400, 1000).await.unwrap(),
        "renewal counts"
    );
    assert!(
        s.take_lease("relay", "b", T0 + 1501, 1000).await.unwrap(),
        "expired: taken over"
    );
    assert!(!s.take_lease("relay", "a", T0 + 1502, 1000).await.unwrap());
    assert!(s.take_lease("other", "a", T0, 1000).await.unwrap());
}

fn node(id: &str, started_at: Millis, beat: Millis) -> NodeRow {
    NodeRow {
        id: id.into(),
        region: "eu".into(),
        zone: "eu-1".into(),
        public_url: format!("http://{id}.example:8080"),
        media_addrs: vec!["10.0.0.1:40000".into(), "10.0.0.1:40001".into()],
        turn_urls: vec![
            "turn:10.0.0.1:3478?transport=udp".into(),
            "turn:10.0.0.1:3478?transport=tcp".into(),
        ],
        relay_addr: "10.0.0.1:7443".into(),
        capacity: 400,
        workers: 2,
        cpu_percent: 12.5,
        peers: 7,
        forwarded_bps: 1_000_000,
        state: "active".into(),
        started_at,
        heartbeat_at: beat,
    }
}

async fn nodes_beat_drain_and_leave<S: Store>(s: &S) {
    s.beat_node(&node("b", T0, T0)).await.unwrap();
    s.beat_node(&node("a", T0, T0)).await.unwrap();
    let mut later = node("a", T0, T0 + 1000);
    later.peers = 9;
    s.beat_node(&later).await.unwrap();
    assert_eq!(
        s.nodes().await.unwrap(),
        vec![later.clone(), node("b", T0, T0)]
    );
    // Draining sticks whatever the node's beats say, until it starts again.
    assert!(s.drain_node("a").await.unwrap());
    assert!(!s.drain_node("nobody").await.unwrap());
    s.beat_node(&node("a", T0, T0 + 2000)).await.unwrap();
    assert_eq!(s.nodes().await.unwrap()[0].state, "draining");
    s.beat_node(&node("a", T0 + 5000, T0 + 5000)).await.unwrap();
    assert_eq!(s.nodes().await.unwrap()[0].state, "active");
    // Leaving takes the node's rooms' homes with it.
    assert_eq!(s.place_room("r1", "a", T0 + 5000, T0).await.unwrap(), "a");
    s.remove_node("a").await.unwrap();
    assert_eq!(s.room_home("r1").await.unwrap(), None);
    assert_eq!(s.nodes().await.unwrap(), vec![node("b", T0, T0)]);
    // Long-silent nodes are forgotten, with their rooms' homes.
    assert_eq!(s.place_room("r2", "b", T0, T0).await.unwrap(), "b");
    assert_eq!(s.forget_nodes(T0 + 1).await.unwrap(), 1);
    assert!(s.nodes().await.unwrap().is_empty());
    assert_eq!(s.room_home("r2").await.unwrap(), None);
}

async fn a_room_has_one_home_until_its_node_dies<S: Store>(s: &S) {
    s.beat_node(&node("a", T0, T0)).await.unwrap();
    s.beat_node(&node("b", T0, T0)).await.unwrap();
    let alive_since = T0 - 3000;
    assert_eq!(s.room_home("r").await.unwrap(), None);
    assert_eq!(s.place_room("r", "a", T0, alive_since).await.unwrap(), "a");
    // A live home is never taken over.
    assert_eq!(
        s.place_room("r", "b", T0 + 1, alive_since).await.unwrap(),
        "a"
    );
    assert_eq!(s.room_home("r").await.unwrap().as_deref(), Some("a"));
    // Racers: one wins, both learn which.
    let (x, y) = tokio::join!(
        s.place_room("q", "a", T0, alive_since),
        s.place_room("q", "b", T0, alive_since)
    );
    assert_eq!(x.unwrap(), y.unwrap());
    // Its node silent past the deadline: the next placement takes the room.
    s.beat_node(&node("b", T0, T0 + 4000)).await.unwrap();
    assert_eq!(
        s.place_room("r", "b", T0 + 4000, T0 + 1000).await.unwrap(),
        "b"
    );
    // A home on a node that never registered counts as dead.
    assert_eq!(
        s.place_room("z", "ghost", T0, alive_since).await.unwrap(),
        "ghost"
    );
    assert_eq!(
        s.place_room("z", "b", T0 + 4000, T0 + 1000).await.unwrap(),
        "b"
    );
    // Moved only from the node it is on.
    assert!(!s.move_room("r", "a", "c", T0 + 4000).await.unwrap());
    assert!(
        s.move_room("q", &s.room_home("q").await.unwrap().unwrap(), "c", T0)
            .await
            .unwrap()
    );
    assert_eq!(s.room_home("q").await.unwrap().as_deref(), Some("c"));
    assert_eq!(s.node_rooms("b").await.unwrap(), ["r", "z"]);
    assert_eq!(s.node_rooms("c").await.unwrap(), ["q"]);
    // Released only by its own node.
    s.release_room("r", "a").await.unwrap();
    assert_eq!(s.room_home("r").await.unwrap().as_deref(), Some("b"));
    s.release_room("r", "b").await.unwrap();
    assert_eq!(s.room_home("r").await.unwrap(), None);
}

fn recording(id: &str, room: &str, at: Millis) -> Recording {
    Recording {
        id: id.into(),
        room_id: format!("id-of-{room}"),
        sfu_room: room.into(),
        owner_id: "u1".into(),
        started_by: "u1".into(),
        node_id: "n1".into(),
        status: "recording".into(),
        started_at: at,
        stopped_at: None,
        uploaded_at: None,
        stop_reason: None,
        failure: None,
        last_error: None,
        manifest: None,
        objects: None,
        continues: None,
    }
}

/// A drained node's recording is continued on the room's new node: both record at
/// once for a moment; still one active recording per room on a node.
async fn a_recording_continues_on_another_node<S: Store>(s: &S) {
    s.create_recording(&recording("r1", "room", T0), ev("e1", "room", T0))
        .await
        .unwrap();
    let next = Recording {
        node_id: "n2".into(),
        continues: Some("r1".into()),
        ..recording("r2", "room", T0 + 5)
    };
    s.create_recording(&next, ev("e2", "room", T0))
        .await
        .unwrap();
    assert!(is_conflict(
        s.create_recording(
            &Recording {
                node_id: "n2".into(),
                ..recording("r3", "room", T0 + 6)
            },
            ev("e3", "room", T0)
        )
        .await,
        "active recording of this room"
    ));
    let got = s.recording("r2").await.unwrap().unwrap();
    assert_eq!(got.continues.as_deref(), Some("r1"));
    assert_eq!(got.node_id, "n2");
    assert_eq!(s.recording("r1").await.unwrap().unwrap().continues, None);
    // What n2 has to start; n1 was handed nothing.
    let ids = |v: Vec<Recording>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.recordings_handed_over_to("n2").await.unwrap()),
        ["r2"]
    );
    assert!(s.recordings_handed_over_to("n1").await.unwrap().is_empty());
}

async fn recordings_move_once_with_their_events<S: Store>(s: &S) {
    s.create_recording(&recording("r1", "room", T0), ev("e1", "room", T0))
        .await
        .unwrap();
    // One active recording per room; the refused one writes no event.
    assert!(is_conflict(
        s.create_recording(&recording("r2", "room", T0 + 1), ev("e2", "room", T0))
            .await,
        "active recording of this room"
    ));
    s.create_recording(&recording("r3", "other", T0 + 2), ev("e3", "other", T0))
        .await
        .unwrap();
    let stop = RecordingChange {
        status: "stopped".into(),
        stopped_at: Some(T0 + 10),
        stop_reason: Some("requested".into()),
        manifest: Some("{}".into()),
        ..RecordingChange::default()
    };
    assert!(
        s.change_recording(
            "r1",
            &["recording"],
            stop.clone(),
            vec![ev("e4", "room", T0)]
        )
        .await
        .unwrap()
    );
    // The same change again (a report repeated after a crash) changes nothing and
    // writes no second event.
    assert!(
        !s.change_recording("r1", &["recording"], stop, vec![ev("e5", "room", T0)])
            .await
            .unwrap()
    );
    let r = s.recording("r1").await.unwrap().unwrap();
    assert_eq!(r.status, "stopped");
    assert_eq!(r.stopped_at, Some(T0 + 10));
    assert_eq!(r.manifest.as_deref(), Some("{}"));
    // Unset fields stay as they were.
    let up = RecordingChange {
        status: "uploaded".into(),
        uploaded_at: Some(T0 + 20),
        objects: Some("[]".into()),
        ..RecordingChange::default()
    };
    assert!(
        s.change_recording(
            "r1",
            &["recording", "stopped"],
            up,
            vec![ev("e6", "room", T0)]
        )
        .await
        .unwrap()
    );
    let r = s.recording("r1").await.unwrap().unwrap();
    assert_eq!(
        (r.status.as_str(), r.stopped_at, r.uploaded_at),
        ("uploaded", Some(T0 + 10), Some(T0 + 20))
    );
    assert_eq!(r.stop_reason.as_deref(), Some("requested"));
    // The room may record again once nothing is active.
    s.create_recording(&recording("r4", "room", T0 + 30), ev("e7", "room", T0))
        .await
        .unwrap();
    // A later room of the same name is another room: it lists none of these.
    let later = Recording {
        room_id: "id-of-a-later-room".into(),
        status: "stopped".into(),
        ..recording("r5", "room", T0 + 40)
    };
    s.create_recording(&later, ev("e8", "room", T0))
        .await
        .unwrap();
    let listed: Vec<String> = s
        .room_recordings("id-of-a-later-room")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["r5"]);
    let listed: Vec<String> = s
        .room_recordings("id-of-room")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["r4", "r1"]);
    let active: Vec<String> = s
        .node_recordings("n1", "recording")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(active, ["r3", "r4"]);
    assert!(s.recording("nope").await.unwrap().is_none());
    assert_eq!(
        event_ids(&s.unpublished_events(20).await.unwrap()),
        ["e1", "e3", "e4", "e6", "e7", "e8"]
    );
}

fn job(id: &str, at: Millis) -> Job {
    Job {
        id: id.into(),
        kind: "transcode".into(),
        owner_id: Some("u1".into()),
        recording_id: None,
        spec: "{}".into(),
        status: "queued".into(),
        stage: None,
        percent: 0,
        attempts: 0,
        worker_id: None,
        lease_until: None,
        last_error: None,
        result: None,
        created_at: at,
        updated_at: at,
    }
}

async fn jobs_are_claimed_by_one_worker_and_move_with_their_events<S: Store>(s: &S) {
    assert!(
        s.create_job(&job("j1", T0), vec![ev("e1", "j1", T0)])
            .await
            .unwrap()
    );
    // The same request again (redelivered) inserts nothing and writes no event.
    assert!(
        !s.create_job(&job("j1", T0), vec![ev("e2", "j1", T0)])
            .await
            .unwrap()
    );
    let mut mix = job("j2", T0 + 1);
    mix.kind = "mixdown".into();
    mix.recording_id = Some("r1".into());
    assert!(s.create_job(&mix, vec![]).await.unwrap());

    let claimed = s
        .claim_job("j1", "w1", T0 + 10, T0 + 1000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            claimed.status.as_str(),
            claimed.attempts,
            claimed.worker_id.as_deref()
        ),
        ("running", 1, Some("w1"))
    );
    assert!(
        s.claim_job("j1", "w2", T0 + 20, T0 + 1000)
            .await
            .unwrap()
            .is_none(),
        "held on a live lease"
    );
    // Progress by the holder; nobody else can change it.
    let progress = JobChange {
        status: "running".into(),
        stage: Some("decode".into()),
        percent: Some(30),
        ..JobChange::default()
    };
    assert!(
        !s.change_job(
            "j1",
            "w2",
            progress.clone(),
            T0 + 30,
            vec![ev("e3", "j1", T0)]
        )
        .await
        .unwrap()
    );
    assert!(
        s.change_job("j1", "w1", progress, T0 + 30, vec![ev("e4", "j1", T0)])
            .await
            .unwrap()
    );
    // The worker dies: once the lease runs out another worker claims it again.
    let again = s
        .claim_job("j1", "w2", T0 + 1001, T0 + 2000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.attempts, again.stage.as_deref(), again.percent),
        (2, Some("decode"), 30)
    );
    let retry = JobChange {
        status: "retrying".into(),
        last_error: Some("store away".into()),
        ..JobChange::default()
    };
    assert!(
        !s.change_job("j1", "w1", retry.clone(), T0 + 1002, vec![])
            .await
            .unwrap(),
        "the first worker lost it"
    );
    assert!(
        s.change_job("j1", "w2", retry, T0 + 1002, vec![ev("e5", "j1", T0)])
            .await
            .unwrap()
    );
    let third = s
        .claim_job("j1", "w2", T0 + 1003, T0 + 3000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.attempts, 3);
    let done = JobChange {
        status: "completed".into(),
        percent: Some(100),
        result: Some(r#"{"ok":true}"#.into()),
        ..JobChange::default()
    };
    assert!(
        s.change_job("j1", "w2", done, T0 + 1004, vec![ev("e6", "j1", T0)])
            .await
            .unwrap()
    );
    let j = s.job("j1").await.unwrap().unwrap();
    assert!(j.is_final());
    assert_eq!(
        (
            j.status.as_str(),
            j.percent,
            j.last_error.as_deref(),
            j.result.as_deref()
        ),
        ("completed", 100, Some("store away"), Some(r#"{"ok":true}"#))
    );
    assert_eq!(j.updated_at, T0 + 1004);
    assert!(
        s.claim_job("j1", "w3", T0 + 9999, T0 + 99_999)
            .await
            .unwrap()
            .is_none(),
        "a finished job is never claimed"
    );
    assert!(s.job("nope").await.unwrap().is_none());

    let ids = |v: Vec<Job>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.owner_jobs("u1", "transcode", 10).await.unwrap()),
        ["j1"]
    );
    assert_eq!(
        ids(s.owner_jobs("u1", "mixdown", 10).await.unwrap()),
        ["j2"]
    );
    assert_eq!(ids(s.recording_jobs("r1").await.unwrap()), ["j2"]);
    assert_eq!(ids(s.open_jobs(10).await.unwrap()), ["j2"]);
    assert_eq!(
        event_ids(&s.unpublished_events(20).await.unwrap()),
        ["e1", "e4", "e5", "e6"]
    );
    // Only its owner deletes a job, and only once it is over.
    assert!(!s.delete_finished_job("u1", "j2").await.unwrap(), "queued");
    assert!(
        !s.delete_finished_job("u2", "j1").await.unwrap(),
        "not theirs"
    );
    assert!(s.delete_finished_job("u1", "j1").await.unwrap());
    // Its row stays, marked, so a redelivered request is not taken for a new job; it
    // is listed nowhere and its bytes count no more.
    let gone = s.job("j1").await.unwrap().unwrap();
    assert!(gone.is_deleted() && gone.is_final(), "{gone:?}");
    assert!(
        !s.create_job(&job("j1", T0), vec![]).await.unwrap(),
        "the same request again makes no job"
    );
    assert!(ids(s.owner_jobs("u1", "transcode", 10).await.unwrap()).is_empty());
    assert!(!s.delete_finished_job("u1", "j1").await.unwrap(), "gone");
}

/// A database made before migration 0011 (room names global): after it, names are
/// unique per owner, and the rooms, their settings and their invitations are all
/// still there (SQLite rebuilds the table, which would cascade to the invitations).
/// `bump` moves a room's epoch on in the old schema (the store's own statement is
/// the latest schema's).
async fn names_per_owner_after_migration<S: Store>(
    s: &S,
    old: impl AsyncFnOnce(&S),
    bump: impl AsyncFnOnce(&S, &str) -> i64,
) {
    old(s).await;
    let host = user(s, "host@example.com").await;
    let guest = user(s, "guest@example.com").await;
    let mut before = s
        .create_room(&host.id, "jam", settings(8, true, "anyone"), T0)
        .await
        .unwrap();
    let m = s
        .invite_member(&before.id, "guest@example.com", T0 + 1)
        .await
        .unwrap();
    s.answer_invitation(&m.id, "guest@example.com", &guest.id, true, T0 + 2)
        .await
        .unwrap()
        .unwrap();
    before.epoch = bump(s, &before.id).await;
    assert!(
        is_conflict(
            s.create_room(&guest.id, "jam", settings(2, false, "owner"), T0 + 3)
                .await,
            "room name"
        ),
        "before 0011 names were global"
    );

    s.migrate().await.expect("migrate to the latest");
    assert_eq!(
        s.room_by_id(&before.id).await.unwrap(),
        Some(before.clone())
    );
    assert!(s.is_member(&before.id, &guest.id).await.unwrap());
    assert_eq!(s.room_members(&before.id).await.unwrap().len(), 1);
    let theirs = s
        .create_room(&guest.id, "jam", settings(2, false, "owner"), T0 + 4)
        .await
        .expect("another owner may use the name now");
    assert_ne!(theirs.id, before.id);
    assert!(is_conflict(
        s.create_room(&host.id, "jam", settings(2, false, "owner"), T0 + 5)
            .await,
        "room name"
    ));
    // Foreign keys still hold: deleting the room takes its invitations along.
    assert!(s.delete_room(&host.id, "jam").await.unwrap());
    assert!(s.invitations("guest@example.com").await.unwrap().is_empty());
}

/// The migrations before 0011, from the repository's directory for `backend`.
async fn migrations_before_0011(backend: &str) -> (sqlx::migrate::Migrator, common::TempDir) {
    let dir = common::TempDir::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(backend);
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0011" {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    (migrator, dir)
}

#[tokio::test]
async fn sqlite_room_names_per_owner_after_migration() {
    let (path, _dir) = common::fresh_sqlite_path();
    let store = SqliteStore::connect(&path).await.unwrap();
    let (old, _old_dir) = migrations_before_0011("sqlite").await;
    names_per_owner_after_migration(
        &store,
        async |s: &SqliteStore| old.run(s.pool()).await.unwrap(),
        async |s: &SqliteStore, id: &str| {
            sqlx::query_scalar("UPDATE rooms SET epoch = epoch + 1 WHERE id = ? RETURNING epoch")
                .bind(id)
                .fetch_one(s.pool())
                .await
                .unwrap()
        },
    )
    .await;
    store.pool().close().await;
}

#[tokio::test]
async fn postgres_room_names_per_owner_after_migration() {
    let (url, _db) = common::fresh_pg_url().await;
    let store = PgStore::connect(&url).await.unwrap();
    let (old, _old_dir) = migrations_before_0011("postgres").await;
    names_per_owner_after_migration(
        &store,
        async |s: &PgStore| old.run(s.pool()).await.unwrap(),
        async |s: &PgStore, id: &str| {
            sqlx::query_scalar("UPDATE rooms SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch")
                .bind(id)
                .fetch_one(s.pool())
                .await
                .unwrap()
        },
    )
    .await;
    store.pool().close().await;
}

/// The statistics read one user's period from an index, never the whole table: asked
/// of each backend's planner with the exact statement, over a table holding other
/// users' plays too.
mod statistics_plan {
    use super::*;

    /// `n` plays of the user, one a minute back from `T0`, and as many of another user.
    fn fill_sql(backend_series: &str) -> String {
        format!(
            "INSERT INTO plays (id, user_id, started_at, device_id, track_key, track_id, title, \
             artist, album, duration_ms, listened_ms) \
             SELECT u || '-' || i, u, {T0} - i * 60000, 'd', i % 500, 't' || (i % 500), \
             'T' || (i % 500), 'A' || (i % 50), 'L' || (i % 100), 200000, 60000 \
             FROM {backend_series}"
        )
    }

    /// What each track key stands for, from the plays just made.
    const NAME_TRACKS: &str = "INSERT INTO play_tracks \
        SELECT DISTINCT user_id, track_key, title, artist, album, track_id FROM plays";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_reads_a_range_of_a_narrow_index() {
        let (path, _dir) = common::fresh_sqlite_path();
        let s = SqliteStore::connect(&path).await.unwrap();
        s.migrate().await.unwrap();
        let (a, b) = (
            user(&s, "a@example.com").await,
            user(&s, "b@example.com").await,
        );
        let series = format!(
            "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
             SELECT i FROM n), (SELECT '{}' AS u UNION ALL SELECT '{}')",
            a.id, b.id
        );
        sqlx::query(sqlx::AssertSqlSafe(fill_sql(&series)))
            .execute(s.pool())
            .await
            .unwrap();
        sqlx::query(NAME_TRACKS).execute(s.pool()).await.unwrap();
        sqlx::query("ANALYZE").execute(s.pool()).await.unwrap();
        let plan = explain_sqlite(&s, &a.id).await;
        assert!(
            plan.iter().any(|l| l.contains(
                "SEARCH p USING COVERING INDEX plays_user_track (user_id=? AND track_key=? AND started_at>?)"
            )),
            "{plan:#?}"
        );
        // The plays arrive grouped: no sort of them, and no scan of anything but `k`.
        let materialized = plan
            .iter()
            .skip_while(|l| !l.starts_with("MATERIALIZE k"))
            .take_while(|l| !l.starts_with("SCAN k"))
            .collect::<Vec<_>>();
        assert!(materialized.len() > 1, "{plan:#?}");
        assert!(
            !materialized
                .iter()
                .any(|l| l.starts_with("SCAN") || l.contains("TEMP B-TREE")),
            "{plan:#?}"
        );
        let stats = s.listening_stats(&a.id, Millis::MIN, 10).await.unwrap();
        assert_eq!(stats.plays, 5000);
        assert_eq!(stats.tracks.len(), 10);
        assert_eq!(stats.tracks[0].plays, 10, "{stats:?}");
        s.pool().close().await;
    }

    async fn explain_sqlite(s: &SqliteStore, user: &str) -> Vec<String> {
        use sqlx::Row;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            control_api::store::sqlite::LISTENING_STATS_SQL
        )))
        .bind(user)
        .bind(T0 - 365 * 24 * HOUR)
        .bind(10)
        .fetch_all(s.pool())
        .await
        .unwrap();
        rows.iter().map(|r| r.get::<String, _>("detail")).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_reads_the_covering_index() {
        let (url, _db) = common::fresh_pg_url().await;
        let s = PgStore::connect(&url).await.unwrap();
        s.migrate().await.unwrap();
        let (a, b) = (
            user(&s, "a@example.com").await,
            user(&s, "b@example.com").await,
        );
        let series = format!(
            "generate_series(1::bigint, 20000) AS i, (VALUES ('{}'), ('{}')) AS us(u)",
            a.id, b.id
        );
        sqlx::query(sqlx::AssertSqlSafe(fill_sql(&series)))
            .execute(s.pool())
            .await
            .unwrap();
        sqlx::query(NAME_TRACKS).execute(s.pool()).await.unwrap();
        sqlx::query("VACUUM ANALYZE plays")
            .execute(s.pool())
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN {}",
            control_api::store::postgres::LISTENING_STATS_SQL
        )))
        .bind(&a.id)
        .bind(T0 - 7 * 24 * HOUR)
        .bind(10i64)
        .fetch_all(s.pool())
        .await
        .unwrap();
        assert!(
            plan.iter()
                .any(|l| l.contains("Index Only Scan using plays_user_time")),
            "{plan:#?}"
        );
        assert!(
            !plan.iter().any(|l| l.contains("Seq Scan on plays")),
            "{plan:#?}"
        );
        let stats = s.listening_stats(&a.id, Millis::MIN, 10).await.unwrap();
        assert_eq!(stats.plays, 20000);
        assert_eq!(stats.tracks[0].plays, 40, "{stats:?}");
        s.pool().close().await;
    }
}
