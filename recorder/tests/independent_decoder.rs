//! What the Ogg Opus writer produces, decoded by an independent decoder: FFmpeg's, via
//! PyAV in the project's Python virtualenv (`scripts/ensure-venv.sh`; aiortc brings it).

use std::process::Command;

mod support;
use support::python;

use recorder::OggOpusWriter;
use recorder::ogg::{PRE_SKIP, SILENCE_20MS};

/// (decoded samples per channel, channels, sample rate) as PyAV reports them.
fn decode(py: &str, path: &std::path::Path) -> (u64, u64, u64) {
    let script = r#"
import sys, av
c = av.open(sys.argv[1])
s = c.streams.audio[0]
n = sum(f.samples for f in c.decode(s))
print(n, s.codec_context.channels, s.codec_context.sample_rate)
"#;
    let out = Command::new(py)
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("running the decoder");
    assert!(
        out.status.success(),
        "PyAV could not decode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

#[test]
fn ffmpeg_decodes_the_duration_that_was_sent_gaps_included() {
    let py = python();
    let dir = std::env::temp_dir().join(format!("sc-ogg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("track.opus");
    // 3 s of 20 ms packets with a 1 s DTX pause in the middle and a lost packet.
    let mut w = OggOpusWriter::new(Vec::new(), 2, 42, "streamcore").unwrap();
    let mut ts = 90_000u32;
    for i in 0..150u32 {
        if i == 75 {
            ts = ts.wrapping_add(48_000); // nothing sent for a second
        }
        if i != 100 {
            w.push(ts, &SILENCE_20MS).unwrap();
        }
        ts = ts.wrapping_add(960);
    }
    let written = w.samples();
    std::fs::write(&path, w.finish().unwrap()).unwrap();
    // 150 packets and the gap filled: 4 s of media time.
    assert_eq!(written, 4 * 48_000);
    let (samples, channels, rate) = decode(&py, &path);
    assert_eq!((channels, rate), (2, 48_000));
    assert_eq!(samples, written - u64::from(PRE_SKIP));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A VP8 recording whose recorder died mid-write (no `finish`, a block torn in half)
/// is repaired, and FFmpeg decodes every whole frame of it at the encoder's size.
#[test]
fn ffmpeg_decodes_a_video_recording_repaired_after_a_crash() {
    use media_core::str0m::format::Codec;
    use media_core::str0m::media::Mid;
    use media_core::{PeerId, TapPacket, TrackRef};
    use recorder::video::{VideoWriter, repair_matroska};

    let py = python();
    let frames = support::encode(&py, "vp8", 45);
    let dir = std::env::temp_dir().join(format!("sc-mkv-crash-{}", support::rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("track.webm");
    let mut w = VideoWriter::new(std::fs::File::create(&path).unwrap(), Codec::Vp8).unwrap();
    for (i, f) in frames.iter().enumerate() {
        // One RTP packet per frame: the VP8 descriptor (S bit, partition 0), the frame.
        let mut payload = vec![0x10];
        payload.extend_from_slice(&f.data);
        w.push(&TapPacket {
            track: TrackRef {
                owner: PeerId(1),
                mid: Mid::from("1"),
            },
            seq: i as u64 + 1,
            rtp_time: i64::from(f.pts),
            marker: true,
            payload: payload.into(),
            arrival: std::time::Instant::now(),
            sender_clock: None,
        })
        .unwrap();
    }
    // Killed here: never finished; then a torn write of the next block's start.
    drop(w);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, &[0xa3, 0x40, 0xd0, 0x81, 0x00]).unwrap();
    drop(file);

    let ms = repair_matroska(&path).unwrap();
    // 45 frames at 30 fps: 1.5 s.
    assert!((ms - 1500.0).abs() <= 40.0, "{ms} ms");
    let streams = support::decode(&py, &path);
    let video = streams
        .iter()
        .find(|s| s["type"] == "video")
        .expect("a video stream");
    assert_eq!(video["codec"], "vp8", "{video}");
    assert_eq!(video["frames"], 45, "every whole frame decodes: {video}");
    assert_eq!(
        (&video["width"], &video["height"]),
        (&320.into(), &240.into()),
        "{video}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
