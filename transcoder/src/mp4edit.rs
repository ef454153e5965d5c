//! The edit list of an MP4/M4A file's audio track: where the playable audio starts
//! (the encoder's delay, e.g. AAC's 1024 or Apple's 2112 samples) and how long it is
//! (so the encoder's padding of the last frame is cut). symphonia 0.6 reads `elst` but
//! does not apply it, so the decoder applies it itself.
//!
//! Only the atoms on the way are read: the top-level boxes are skipped by their sizes
//! and `moov` (small) is read whole; a file that is not MP4, or has no usable edit,
//! gives `None` and is decoded as it is.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The playable part of the audio track, in frames at the track's sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    /// Frames to drop at the start.
    pub delay: u64,
    /// Frames to keep after them.
    pub playable: u64,
}

/// `moov` larger than this is not read (a malicious size).
const MAX_MOOV: u64 = 64 << 20;

pub fn read(path: &Path) -> Option<Edit> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut pos = 0u64;
    let mut first = true;
    while pos + 8 <= len {
        f.seek(SeekFrom::Start(pos)).ok()?;
        let mut h = [0u8; 16];
        f.read_exact(&mut h[..8]).ok()?;
        let kind: [u8; 4] = h[4..8].try_into().ok()?;
        if first && &kind != b"ftyp" {
            return None;
        }
        first = false;
        let (size, header) = match u32::from_be_bytes(h[..4].try_into().ok()?) {
            0 => (len - pos, 8),
            1 => {
                f.read_exact(&mut h[8..16]).ok()?;
                (u64::from_be_bytes(h[8..16].try_into().ok()?), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header {
            return None;
        }
        if &kind == b"moov" {
            if size > MAX_MOOV {
                return None;
            }
            let mut moov = vec![0u8; (size - header) as usize];
            f.read_exact(&mut moov).ok()?;
            return from_moov(&moov);
        }
        pos = pos.checked_add(size)?;
    }
    None
}

/// The boxes directly inside `data`: (type, payload).
fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + 8 > data.len() {
            return None;
        }
        let mut size = u32::from_be_bytes(data[at..at + 4].try_into().ok()?) as usize;
        let mut header = 8;
        if size == 1 {
            size = usize::try_from(u64::from_be_bytes(
                data.get(at + 8..at + 16)?.try_into().ok()?,
            ))
            .ok()?;
            header = 16;
        } else if size == 0 {
            size = data.len() - at;
        }
        if size < header || at + size > data.len() {
            return None;
        }
        let item = (&data[at + 4..at + 8], &data[at + header..at + size]);
        at += size;
        Some(item)
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

fn u32_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_be_bytes(
        d.get(at..at + 4)?.try_into().ok()?,
    )))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// A full box's timescale (`mvhd`, `mdhd`): after version/flags and two times.
fn timescale(d: &[u8]) -> Option<u64> {
    match d.first()? {
        0 => u32_at(d, 12),
        1 => u32_at(d, 20),
        _ => None,
    }
}

fn from_moov(moov: &[u8]) -> Option<Edit> {
    let movie_scale = timescale(child(moov, b"mvhd")?)?;
    let trak = boxes(moov)
        .filter(|(k, _)| *k == b"trak")
        .map(|(_, p)| p)
        .find(|t| {
            child(t, b"mdia")
                .and_then(|m| child(m, b"hdlr"))
                .and_then(|h| h.get(8..12))
                == Some(b"soun".as_slice())
        })?;
    let mdia = child(trak, b"mdia")?;
    let media_scale = timescale(child(mdia, b"mdhd")?)?;
    let rate = sample_rate(mdia).unwrap_or(media_scale);
    let elst = child(child(trak, b"edts")?, b"elst")?;
    let version = *elst.first()?;
    let count = u32_at(elst, 4)?;
    let entry = if version == 1 { 20 } else { 12 };
    // The first edit that plays media (an empty edit, media_time −1, only shifts it).
    for i in 0..count.min(16) as usize {
        let at = 8 + i * entry;
        let (duration, media_time) = if version == 1 {
            (u64_at(elst, at)?, u64_at(elst, at + 8)? as i64)
        } else {
            (
                u32_at(elst, at)?,
                i64::from(u32_at(elst, at + 4)? as u32 as i32),
            )
        };
        if media_time < 0 {
            continue;
        }
        if movie_scale == 0 || media_scale == 0 {
            return None;
        }
        let delay = (media_time as u128 * u128::from(rate) / u128::from(media_scale)) as u64;
        let playable = (u128::from(duration) * u128::from(rate) / u128::from(movie_scale)) as u64;
        return (playable > 0).then_some(Edit { delay, playable });
    }
    None
}

/// The sample rate of the first audio sample entry (`stsd` → `mp4a`/…), which is what
/// decoded frames count in (the media timescale usually equals it).
fn sample_rate(mdia: &[u8]) -> Option<u64> {
    let stsd = child(child(child(mdia, b"minf")?, b"stbl")?, b"stsd")?;
    // version/flags 4, entry count 4, then the first entry's box
    let (_, entry) = boxes(stsd.get(8..)?).next()?;
    // SampleEntry: 6 reserved + 2 index; AudioSampleEntry: 8 reserved, channels 2,
    // sample size 2, 4 pre-defined/reserved, then rate as 16.16 fixed point.
    u32_at(entry, 24).map(|r| r >> 16).filter(|r| *r > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn full_v0_timescale(scale: u32) -> Vec<u8> {
        let mut v = vec![0u8; 12];
        v.extend_from_slice(&scale.to_be_bytes());
        v.extend_from_slice(&[0; 8]);
        v
    }

    fn trak(handler: &[u8], rate: u32, edits: &[(u32, i32)]) -> Vec<u8> {
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(handler);
        hdlr.extend_from_slice(&[0; 12]);
        let mut entry = vec![0u8; 24];
        entry.extend_from_slice(&(rate << 16).to_be_bytes());
        let mut stsd = vec![0, 0, 0, 0, 0, 0, 0, 1];
        stsd.extend(bx(b"mp4a", &entry));
        let minf = bx(b"minf", &bx(b"stbl", &bx(b"stsd", &stsd)));
        let mdia = [
            bx(b"mdhd", &full_v0_timescale(rate)),
            bx(b"hdlr", &hdlr),
            minf,
        ]
        .concat();
        let mut elst = vec![0u8; 4];
        elst.extend_from_slice(&(edits.len() as u32).to_be_bytes());
        for (d, t) in edits {
            elst.extend_from_slice(&d.to_be_bytes());
            elst.extend_from_slice(&t.to_be_bytes());
            elst.extend_from_slice(&[0, 1, 0, 0]);
        }
        bx(
            b"trak",
            &[bx(b"edts", &bx(b"elst", &elst)), bx(b"mdia", &mdia)].concat(),
        )
    }

    #[test]
    fn the_audio_tracks_first_playing_edit_gives_delay_and_length() {
        let moov = [
            bx(b"mvhd", &full_v0_timescale(1000)),
            trak(b"vide", 90_000, &[(6000, 0)]),
            trak(b"soun", 44_100, &[(500, -1), (6000, 1024)]),
        ]
        .concat();
        assert_eq!(
            from_moov(&moov),
            Some(Edit {
                delay: 1024,
                playable: 264_600
            })
        );
        let file = [
            bx(b"ftyp", b"M4A \0\0\0\0"),
            bx(b"free", &[0; 9]),
            bx(b"moov", &moov),
            bx(b"mdat", &[1; 100]),
        ]
        .concat();
        let path = std::env::temp_dir().join(format!("sc-mp4edit-{}.m4a", std::process::id()));
        std::fs::write(&path, &file).unwrap();
        assert_eq!(read(&path).map(|e| e.delay), Some(1024));
        std::fs::write(&path, b"OggS and not an mp4 at all").unwrap();
        assert_eq!(read(&path), None);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn truncated_or_editless_files_give_none() {
        let moov = [
            bx(b"mvhd", &full_v0_timescale(1000)),
            trak(b"soun", 48_000, &[]),
        ]
        .concat();
        assert_eq!(from_moov(&moov), None);
        assert_eq!(from_moov(&moov[..moov.len() / 2]), None);
        assert_eq!(from_moov(&[]), None);
    }
}
