//! Recording benchmarks (docs/benchmarks.md "Recording"):
//!
//! 1. **Forwarding cost of a recording.** Two identical in-process rooms (B0's
//!    harness: one publisher, N subscribers, virtual time); one is recorded (the SFU
//!    offers every packet to a real recorder session writing files on another thread).
//!    SFU-side ns per publisher packet, measured in alternating windows; the ratio
//!    recorded / plain is the cost.
//! 2. **Recorded tracks per core.** One thread writes many tracks' packets through
//!    `recorder::Session` (reorder, container, files) as fast as it can; the tracks
//!    one core could record at their real-time packet rate follow. The baseline, in
//!    the same run: the same payload bytes appended raw to a buffered file each.
//!
//! `sc-recbench [--rounds N] [--seconds S]`; pin it with `taskset -c 1`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use media_core::str0m::format::Codec;
use media_core::str0m::media::{MediaKind, Mid};
use media_core::{PeerId, RoomId, TapItem, TapPacket, TapTrack, TrackRef};
use recorder::{Session, SessionConfig};
use streamcore_benches::Summary;
use streamcore_benches::inmem::InMem;
use streamcore_benches::shape::Kind;

struct Args {
    rounds: usize,
    seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        rounds: 7,
        seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--rounds" => a.rounds = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            _ => anyhow::bail!("unknown argument {k}"),
        }
    }
    Ok(a)
}

fn spool() -> PathBuf {
    let d = std::env::temp_dir().join(format!("sc-recbench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    media_core::str0m::crypto::from_feature_flags().install_process_default();
    println!(
        "sc-recbench  git {}  {}",
        streamcore_benches::procfs::git_sha(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))),
        streamcore_benches::procfs::machine()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = spool();
    println!("\n## Forwarding cost of a recording (SFU side, ns per publisher packet)\n");
    println!("| room | plain | recorded | ratio | tap items refused |");
    println!("|---|---|---|---|---|");
    for (kind, subs) in [
        (Kind::Audio, 1),
        (Kind::Audio, 10),
        (Kind::Video, 1),
        (Kind::Video, 10),
    ] {
        forwarding_cost(&rt, &dir, kind, subs, &args)?;
    }
    offer_cost(&rt, &dir)?;
    println!("\n## Recorded tracks per core (one thread, packets through recorder::Session)\n");
    println!(
        "| tracks | µs per packet | raw append µs per packet | ratio | tracks per core at real time |"
    );
    println!("|---|---|---|---|---|");
    throughput(&dir, MediaKind::Audio, 50, args.seconds * 12)?;
    throughput(&dir, MediaKind::Video, 10, args.seconds * 12)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn forwarding_cost(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    kind: Kind,
    subs: usize,
    args: &Args,
) -> anyhow::Result<()> {
    let mut plain = InMem::new(kind, subs)?;
    let mut recorded = InMem::new(kind, subs)?;
    let session = Session::create(
        dir,
        &format!("fwd-{kind:?}-{subs}"),
        "bench",
        SessionConfig::default(),
        (Instant::now(), SystemTime::now()),
    )?;
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (tap, handle) = recorder::session::spawn(session, 8192, events, Box::new(|_, _| {}))?;
    recorded
        .sfu
        .start_tap(RoomId::parse("bench")?, Box::new(tap))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let warm = Duration::from_secs(2);
    plain.run(warm);
    recorded.run(warm);
    let window = Duration::from_secs(args.seconds);
    let (mut p, mut r) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let w = plain.measure(window);
        p.push(w.costs.total().ns as f64 / w.sent.max(1) as f64);
        let w = recorded.measure(window);
        r.push(w.costs.total().ns as f64 / w.sent.max(1) as f64);
    }
    let refused = recorded.sfu.stats().tap_refused;
    let manifest = rt.block_on(handle.stop("requested"))?;
    let (ps, rs) = (Summary::of(&p), Summary::of(&r));
    println!(
        "| {kind:?}, {subs} subscriber(s) | {} | {} | {:.2} | {refused} of {} packets |",
        ps.show(0),
        rs.show(0),
        rs.median / ps.median,
        manifest.tracks.first().map_or(0, |t| t.packets)
    );
    Ok(())
}

/// The tap's own cost: `MediaTap::offer` of packets into a running session's queue,
/// as the SFU calls it (the session thread draining on the other side).
fn offer_cost(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> anyhow::Result<()> {
    use media_core::MediaTap;
    let session = Session::create(
        dir,
        "offer",
        "bench",
        SessionConfig::default(),
        (Instant::now(), SystemTime::now()),
    )?;
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (mut tap, handle) = recorder::session::spawn(session, 8192, events, Box::new(|_, _| {}))?;
    let track = TrackRef {
        owner: PeerId(1),
        mid: Mid::from("0"),
    };
    tap.offer(TapItem::Track(TapTrack {
        track,
        identity: "p".into(),
        kind: MediaKind::Audio,
        codec: Codec::Opus,
        clock_rate: 48_000,
        channels: 2,
        rid: None,
    }));
    let pkts = packets(MediaKind::Audio, track, 20, Instant::now());
    let mut samples = Vec::new();
    let mut refused = 0;
    for round in 0..5 {
        let start = Instant::now();
        for p in &pkts {
            let mut p = p.clone();
            p.seq += round * pkts.len() as u64;
            p.rtp_time += (round * pkts.len() as u64) as i64 * 960;
            if !tap.offer(TapItem::Packet(p)) {
                refused += 1;
            }
        }
        samples.push(start.elapsed().as_nanos() as f64 / pkts.len() as f64);
        // Real time per round is far longer: let the session drain.
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(tap);
    rt.block_on(handle.stop("requested"))?;
    println!(
        "\nTap offer (clone + queue, as the SFU does per recorded packet): {} ns per packet ({refused} refused of {})",
        Summary::of(&samples).show(0),
        5 * pkts.len()
    );
    Ok(())
}

/// Synthetic packets of one track: Opus 20 ms / 100 B, or VP8 at 30 fps in 3 packets
/// of 1100 B with a keyframe every 2 s.
fn packets(kind: MediaKind, track: TrackRef, secs: u64, t0: Instant) -> Vec<TapPacket> {
    let mut out = Vec::new();
    match kind {
        MediaKind::Audio => {
            for i in 0..secs * 50 {
                let mut payload = vec![0x5a; 100];
                payload[0] = 0xfc;
                out.push(TapPacket {
                    track,
                    seq: i,
                    rtp_time: i as i64 * 960,
                    marker: false,
                    payload: payload.into(),
                    arrival: t0 + Duration::from_millis(i * 20),
                    sender_clock: None,
                });
            }
        }
        MediaKind::Video => {
            let mut seq = 0;
            for f in 0..secs * 30 {
                let key = f % 60 == 0;
                for part in 0..3u64 {
                    let mut payload = vec![0x33; 1100];
                    payload[0] = if part == 0 { 0x10 } else { 0x00 };
                    if part == 0 {
                        payload[1] = if key { 0x00 } else { 0x01 };
                        payload[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                        payload[7..11].copy_from_slice(&[0x80, 0x02, 0xe0, 0x01]);
                    }
                    out.push(TapPacket {
                        track,
                        seq,
                        rtp_time: f as i64 * 3000,
                        marker: part == 2,
                        payload: payload.into(),
                        arrival: t0 + Duration::from_micros(f * 33_333),
                        sender_clock: None,
                    });
                    seq += 1;
                }
            }
        }
    }
    out
}

fn throughput(
    dir: &std::path::Path,
    kind: MediaKind,
    tracks: u64,
    secs: u64,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let refs: Vec<TrackRef> = (0..tracks)
        .map(|i| TrackRef {
            owner: PeerId(i + 1),
            mid: Mid::from("0"),
        })
        .collect();
    let per_track: Vec<Vec<TapPacket>> = refs.iter().map(|r| packets(kind, *r, secs, t0)).collect();
    let n = per_track[0].len();
    let total = n as u64 * tracks;
    let mut session = Session::create(
        dir,
        &format!("tp-{kind:?}"),
        "bench",
        SessionConfig::default(),
        (t0, SystemTime::now()),
    )?;
    for r in &refs {
        session.handle(TapItem::Track(TapTrack {
            track: *r,
            identity: format!("p{}", r.owner.0),
            kind,
            codec: if kind == MediaKind::Audio {
                Codec::Opus
            } else {
                Codec::Vp8
            },
            clock_rate: if kind == MediaKind::Audio {
                48_000
            } else {
                90_000
            },
            channels: 2,
            rid: None,
        }))?;
    }
    // Interleaved as a room delivers them.
    let start = Instant::now();
    for i in 0..n {
        for t in &per_track {
            session.handle(TapItem::Packet(t[i].clone()))?;
        }
    }
    let m = session.close("requested", SystemTime::now())?;
    let ours = start.elapsed().as_nanos() as f64 / total as f64 / 1000.0;
    // Baseline: the payloads appended raw, one buffered file per track, fsynced.
    let mut files: Vec<BufWriter<File>> = (0..tracks)
        .map(|i| {
            File::create(dir.join(format!("raw-{kind:?}-{i}")))
                .map(|f| BufWriter::with_capacity(64 * 1024, f))
        })
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    for i in 0..n {
        for (t, f) in per_track.iter().zip(files.iter_mut()) {
            f.write_all(&t[i].payload)?;
        }
    }
    for f in files {
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let raw = start.elapsed().as_nanos() as f64 / total as f64 / 1000.0;
    let rate = n as f64 / secs as f64; // packets per second per track
    anyhow::ensure!(
        m.tracks.iter().all(|t| t.packets == n as u64),
        "every packet written"
    );
    println!(
        "| {tracks} × {} ({rate:.0} packets/s each), {secs} s | {ours:.2} | {raw:.2} | {:.2} | {:.0} |",
        if kind == MediaKind::Audio {
            "Opus"
        } else {
            "VP8"
        },
        ours / raw,
        1e6 / (ours * rate)
    );
    Ok(())
}
