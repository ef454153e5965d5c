//! Ogg Opus (RFC 7845, RFC 3533 pages) from RTP payloads.
//!
//! Time is the RTP timestamp (48 kHz for Opus). Each packet's duration comes from its
//! TOC byte (RFC 6716 §3.1), so the granule position counts exactly the samples a
//! decoder will produce. When the next packet starts later than the previous one
//! ended — the sender used DTX, or packets were lost — the gap is filled with 20 ms
//! silence packets, so the file lasts as long as the call did. Late or repeated
//! packets (a timestamp before the end of what was written) are dropped.
//!
//! Pre-skip is 312 samples (libopus's look-ahead at 48 kHz): the decoder discards
//! them, so the playable duration is the samples written less 6.5 ms.

use std::io::Write;

/// Samples per second of Opus in RTP and in Ogg granule positions.
pub const OPUS_RATE: u32 = 48_000;
/// What the decoder discards at the start (libopus's encoder delay).
pub const PRE_SKIP: u16 = 312;
/// A 20 ms Opus packet that decodes to silence (CELT, fullband, one frame).
pub const SILENCE_20MS: [u8; 3] = [0xf8, 0xff, 0xfe];
/// Longest gap filled with silence; a longer jump is a new timeline, not a gap.
pub const MAX_GAP_SAMPLES: u32 = 10 * 60 * OPUS_RATE;

/// A page is flushed once it holds this much media (a page per second keeps seeking
/// cheap and bounds what a crash can lose from an unflushed page).
const PAGE_SAMPLES: u64 = OPUS_RATE as u64;
const MAX_SEGMENTS: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum OggError {
    #[error("not an Opus packet: {0}")]
    BadPacket(&'static str),
    #[error("the timestamp jumps by {0} samples; more than a gap")]
    Discontinuity(u64),
    #[error("not an Ogg Opus stream: {0}")]
    BadStream(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Samples (at 48 kHz) an Opus packet decodes to, from its TOC byte and frame count.
pub fn opus_packet_samples(packet: &[u8]) -> Result<u32, OggError> {
    let toc = *packet.first().ok_or(OggError::BadPacket("empty"))?;
    let config = toc >> 3;
    // Frame size by configuration (RFC 6716 table 2), in samples at 48 kHz.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize], // SILK 10/20/40/60 ms
        12..=15 => [480, 960][(config % 2) as usize],            // hybrid 10/20 ms
        _ => [120, 240, 480, 960][(config % 4) as usize],        // CELT 2.5/5/10/20 ms
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => {
            let c = *packet
                .get(1)
                .ok_or(OggError::BadPacket("code 3 without a count"))?;
            let n = u32::from(c & 0x3f);
            if n == 0 {
                return Err(OggError::BadPacket("code 3 with zero frames"));
            }
            n
        }
    };
    let samples = frame * frames;
    // At most 120 ms per packet.
    if samples > 5760 {
        return Err(OggError::BadPacket("longer than 120 ms"));
    }
    Ok(samples)
}

/// Writes one Opus track as an Ogg Opus stream.
pub struct OggOpusWriter<W: Write> {
    out: W,
    serial: u32,
    page_seq: u32,
    /// Samples of every packet written so far, silence included.
    granule: u64,
    /// The RTP timestamp where the next packet should start.
    next_ts: Option<u32>,
    segments: Vec<u8>,
    body: Vec<u8>,
    page_start: u64,
    /// Silence packets inserted, and packets dropped as late.
    pub filled_samples: u64,
    pub dropped_late: u64,
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the identification and comment headers (each on its own page).
    pub fn new(mut out: W, channels: u8, serial: u32, vendor: &str) -> Result<Self, OggError> {
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(channels.max(1));
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&OPUS_RATE.to_le_bytes()); // input sample rate (informative)
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0: mono or stereo
        write_page(&mut out, serial, 0, 0, FLAG_BOS, &lacing(head.len()), &head)?;
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        write_page(&mut out, serial, 1, 0, 0, &lacing(tags.len()), &tags)?;
        Ok(OggOpusWriter {
            out,
            serial,
            page_seq: 2,
            granule: 0,
            next_ts: None,
            segments: Vec::with_capacity(MAX_SEGMENTS),
            body: Vec::with_capacity(8192),
            page_start: 0,
            filled_samples: 0,
            dropped_late: 0,
        })
    }

    /// Samples written so far (silence included), at 48 kHz.
    pub fn samples(&self) -> u64 {
        self.granule
    }

    /// One RTP payload with its RTP timestamp.
    pub fn push(&mut self, rtp_ts: u32, packet: &[u8]) -> Result<(), OggError> {
        let samples = opus_packet_samples(packet)?;
        if let Some(expected) = self.next_ts {
            let ahead = rtp_ts.wrapping_sub(expected);
            if ahead > u32::MAX / 2 {
                // Before the end of what is written: late or repeated.
                self.dropped_late += 1;
                return Ok(());
            }
            if ahead > MAX_GAP_SAMPLES {
                return Err(OggError::Discontinuity(u64::from(ahead)));
            }
            let mut gap = ahead;
            while gap > 0 {
                // Whole 20 ms silence packets; a remainder under 20 ms is left (the
                // next packet starts up to 20 ms early, inaudibly).
                if gap < 960 {
                    break;
                }
                self.append(&SILENCE_20MS, 960)?;
                self.filled_samples += 960;
                gap -= 960;
            }
        }
        self.append(packet, samples)?;
        self.next_ts = Some(rtp_ts.wrapping_add(samples));
        Ok(())
    }

    fn append(&mut self, packet: &[u8], samples: u32) -> Result<(), OggError> {
        let lace = lacing(packet.len());
        // A full page goes out when the next packet arrives, so the last page always
        // holds packets and carries the end-of-stream flag.
        if !self.segments.is_empty()
            && (self.segments.len() + lace.len() > MAX_SEGMENTS
                || self.granule - self.page_start >= PAGE_SAMPLES)
        {
            self.flush_page(0)?;
        }
        self.segments.extend_from_slice(&lace);
        self.body.extend_from_slice(packet);
        self.granule += u64::from(samples);
        Ok(())
    }

    fn flush_page(&mut self, flags: u8) -> Result<(), OggError> {
        if self.segments.is_empty() && flags & FLAG_EOS == 0 {
            return Ok(());
        }
        write_page(
            &mut self.out,
            self.serial,
            self.page_seq,
            self.granule,
            flags,
            &self.segments,
            &self.body,
        )?;
        self.page_seq += 1;
        self.segments.clear();
        self.body.clear();
        self.page_start = self.granule;
        // Each page reaches the file at once (not only the buffer in front of it), so
        // a recorder that dies loses at most the page being filled.
        self.out.flush()?;
        Ok(())
    }

    /// Like [`finish`](Self::finish), with the stream ending at `granule` (RFC 7845
    /// end trimming: an encoder's last packet is padded, and the decoder drops what
    /// lies past the last page's granule position). `granule` counts the pre-skip.
    pub fn finish_at(mut self, granule: u64) -> Result<W, OggError> {
        if granule < self.granule && granule >= self.page_start {
            self.granule = granule;
        }
        self.finish_inner()
    }

    /// Writes the last page (end of stream) and hands back the output.
    pub fn finish(self) -> Result<W, OggError> {
        self.finish_inner()
    }

    fn finish_inner(mut self) -> Result<W, OggError> {
        self.flush_page(FLAG_EOS)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

const FLAG_CONTINUED: u8 = 0x01;
const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;

/// The lacing values of one packet: 255s, then the remainder (a 0 after a multiple
/// of 255, so the packet ends on this page).
fn lacing(len: usize) -> Vec<u8> {
    let mut v = vec![255u8; len / 255];
    v.push((len % 255) as u8);
    v
}

fn write_page<W: Write>(
    out: &mut W,
    serial: u32,
    seq: u32,
    granule: u64,
    flags: u8,
    segments: &[u8],
    body: &[u8],
) -> Result<(), OggError> {
    let mut page = Vec::with_capacity(27 + segments.len() + body.len());
    page.extend_from_slice(b"OggS");
    page.push(0); // version
    page.push(flags);
    page.extend_from_slice(&granule.to_le_bytes());
    page.extend_from_slice(&serial.to_le_bytes());
    page.extend_from_slice(&seq.to_le_bytes());
    page.extend_from_slice(&[0; 4]); // CRC, filled below
    page.push(segments.len() as u8);
    page.extend_from_slice(segments);
    page.extend_from_slice(body);
    let crc = crc32(&page);
    page[22..26].copy_from_slice(&crc.to_le_bytes());
    out.write_all(&page)?;
    Ok(())
}

/// Ogg's CRC-32: polynomial 0x04c11db7, not reflected, zero initial value and no
/// final XOR (RFC 3533 §6).
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 {
                    (r << 1) ^ 0x04c1_1db7
                } else {
                    r << 1
                };
            }
            *e = r;
        }
        t
    });
    data.iter().fold(0u32, |crc, b| {
        (crc << 8) ^ table[(((crc >> 24) as u8) ^ b) as usize]
    })
}

/// Cuts an Ogg file back to its last complete, CRC-correct page (what a recorder that
/// died mid-write leaves is a valid stream up to there). Returns the granule position
/// of that page: the samples the file holds.
pub fn repair_ogg(path: &std::path::Path) -> Result<u64, OggError> {
    let data = std::fs::read(path)?;
    let mut i = 0;
    let mut granule = 0;
    while let Some(h) = data.get(i..i + 27) {
        if &h[..4] != b"OggS" {
            break;
        }
        let nseg = h[26] as usize;
        let Some(seg) = data.get(i + 27..i + 27 + nseg) else {
            break;
        };
        let end = i + 27 + nseg + seg.iter().map(|s| *s as usize).sum::<usize>();
        let Some(page) = data.get(i..end) else {
            break;
        };
        let mut zeroed = page.to_vec();
        zeroed[22..26].fill(0);
        if crc32(&zeroed) != u32::from_le_bytes([h[22], h[23], h[24], h[25]]) {
            break;
        }
        let g = u64::from_le_bytes(h[6..14].try_into().expect("8 bytes")); // sliced to 8
        if g != u64::MAX {
            granule = g;
        }
        i = end;
    }
    if i < data.len() {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(i as u64)?;
        f.sync_all()?;
    }
    Ok(granule)
}

/// Reads an Ogg Opus stream back: headers, packets and granule positions, with every
/// page's CRC checked. For tests and for the recorder's own checks of its files.
#[derive(Debug, Default)]
pub struct OggOpusReader {
    pub channels: u8,
    pub pre_skip: u16,
    pub packets: Vec<Vec<u8>>,
    /// (granule position, EOS flag) of each page after the headers.
    pub pages: Vec<(u64, bool)>,
}

impl OggOpusReader {
    pub fn parse(data: &[u8]) -> Result<Self, OggError> {
        let bad = |m: &str| OggError::BadStream(m.to_owned());
        let mut r = OggOpusReader::default();
        let mut i = 0;
        let mut packet = Vec::new();
        let mut page_no = 0u32;
        let mut expect_seq = 0u32;
        while i < data.len() {
            let h = data
                .get(i..i + 27)
                .ok_or_else(|| bad("truncated page header"))?;
            if &h[..4] != b"OggS" {
                return Err(bad("missing capture pattern"));
            }
            let flags = h[5];
            let granule = u64::from_le_bytes(h[6..14].try_into().expect("8 bytes")); // sliced to 8
            let seq = u32::from_le_bytes(h[18..22].try_into().expect("4 bytes")); // sliced to 4
            let stored_crc = u32::from_le_bytes(h[22..26].try_into().expect("4 bytes")); // sliced to 4
            let nseg = h[26] as usize;
            let seg = data
                .get(i + 27..i + 27 + nseg)
                .ok_or_else(|| bad("truncated segment table"))?;
            let body_len: usize = seg.iter().map(|s| *s as usize).sum();
            let end = i + 27 + nseg + body_len;
            let page = data.get(i..end).ok_or_else(|| bad("truncated page body"))?;
            let mut zeroed = page.to_vec();
            zeroed[22..26].fill(0);
            if crc32(&zeroed) != stored_crc {
                return Err(bad("page CRC mismatch"));
            }
            if seq != expect_seq {
                return Err(bad("page sequence gap"));
            }
            expect_seq += 1;
            if page_no == 0 && flags & FLAG_BOS == 0 {
                return Err(bad("first page lacks BOS"));
            }
            let mut body = &page[27 + nseg..];
            if flags & FLAG_CONTINUED == 0 && !packet.is_empty() {
                return Err(bad("unterminated packet"));
            }
            for &s in seg {
                packet.extend_from_slice(&body[..s as usize]);
                body = &body[s as usize..];
                if s < 255 {
                    let p = std::mem::take(&mut packet);
                    match page_no {
                        0 => {
                            if p.len() < 19 || &p[..8] != b"OpusHead" {
                                return Err(bad("no OpusHead"));
                            }
                            r.channels = p[9];
                            r.pre_skip = u16::from_le_bytes([p[10], p[11]]);
                        }
                        1 => {
                            if !p.starts_with(b"OpusTags") {
                                return Err(bad("no OpusTags"));
                            }
                        }
                        _ => r.packets.push(p),
                    }
                }
            }
            if page_no >= 2 {
                r.pages.push((granule, flags & FLAG_EOS != 0));
            }
            page_no += 1;
            i = end;
        }
        if page_no < 2 {
            return Err(bad("headers missing"));
        }
        Ok(r)
    }

    /// Samples of all packets, from their TOC bytes.
    pub fn samples(&self) -> Result<u64, OggError> {
        self.packets
            .iter()
            .map(|p| opus_packet_samples(p).map(u64::from))
            .sum()
    }

    /// Playable duration: the last granule position less the pre-skip.
    pub fn duration_secs(&self) -> f64 {
        let last = self.pages.last().map_or(0, |(g, _)| *g);
        last.saturating_sub(u64::from(self.pre_skip)) as f64 / f64::from(OPUS_RATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_durations_from_the_toc() {
        assert_eq!(opus_packet_samples(&SILENCE_20MS).unwrap(), 960);
        assert_eq!(opus_packet_samples(&[0x08]).unwrap(), 960); // SILK NB 20 ms
        assert_eq!(opus_packet_samples(&[0x18]).unwrap(), 2880); // SILK NB 60 ms
        assert_eq!(opus_packet_samples(&[0xf8 | 1]).unwrap(), 1920); // two 20 ms frames
        assert_eq!(opus_packet_samples(&[0xf3, 0x03]).unwrap(), 1440); // 3 × 10 ms (code 3)
        assert!(opus_packet_samples(&[]).is_err());
        assert!(opus_packet_samples(&[0xfb]).is_err()); // code 3, no count
        assert!(opus_packet_samples(&[0xfb, 0x3f]).is_err()); // 63 × 20 ms
    }

    #[test]
    fn crc_matches_the_ogg_reference() {
        // Ogg's parameters are CRC-32/POSIX's (poly 0x04c11db7, init 0, unreflected)
        // without its final XOR: the check value is !0x765e7680.
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    fn write(packets: &[(u32, Vec<u8>)]) -> (Vec<u8>, u64, u64) {
        let mut w = OggOpusWriter::new(Vec::new(), 1, 7, "streamcore-test").unwrap();
        for (ts, p) in packets {
            w.push(*ts, p).unwrap();
        }
        let (filled, late) = (w.filled_samples, w.dropped_late);
        (w.finish().unwrap(), filled, late)
    }

    #[test]
    fn continuous_stream_round_trips() {
        let packets: Vec<(u32, Vec<u8>)> = (0..250u32)
            .map(|i| (1000 + i * 960, vec![0xf8, (i % 256) as u8, 0xfe]))
            .collect();
        let (data, filled, _) = write(&packets);
        assert_eq!(filled, 0);
        let r = OggOpusReader::parse(&data).unwrap();
        assert_eq!(r.channels, 1);
        assert_eq!(r.pre_skip, PRE_SKIP);
        assert_eq!(r.packets.len(), 250);
        assert_eq!(r.packets[17], packets[17].1);
        assert_eq!(r.samples().unwrap(), 250 * 960);
        // Granules grow, end at the total, and only the last page ends the stream.
        assert!(r.pages.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(r.pages.last().unwrap(), &(250 * 960, true));
        assert_eq!(r.pages.iter().filter(|(_, eos)| *eos).count(), 1);
        assert!(
            r.pages.len() >= 5,
            "about a page per second: {}",
            r.pages.len()
        );
        let want = 5.0 - f64::from(PRE_SKIP) / 48_000.0;
        assert!((r.duration_secs() - want).abs() < 1e-9);
    }

    #[test]
    fn gaps_become_silence_and_late_packets_are_dropped() {
        // 1 s, then 400 ms of DTX silence (nothing sent), then 1 s; a late duplicate.
        let mut packets: Vec<(u32, Vec<u8>)> =
            (0..50u32).map(|i| (i * 960, vec![0xf8, 1, 2])).collect();
        packets.push((10 * 960, vec![0xf8, 9, 9])); // late
        packets.extend((70..120u32).map(|i| (i * 960, vec![0xf8, 3, 4])));
        let (data, filled, late) = write(&packets);
        assert_eq!(filled, 20 * 960);
        assert_eq!(late, 1);
        let r = OggOpusReader::parse(&data).unwrap();
        assert_eq!(r.packets.len(), 120);
        assert_eq!(r.packets[60], SILENCE_20MS.to_vec());
        assert_eq!(r.samples().unwrap(), 120 * 960);
        // Timestamps wrap around u32 without a gap.
        let start = u32::MAX - 960 * 10;
        let wrap: Vec<(u32, Vec<u8>)> = (0..20u32)
            .map(|i| (start.wrapping_add(i * 960), vec![0xf8, 0, 0]))
            .collect();
        let (_, filled, late) = write(&wrap);
        assert_eq!((filled, late), (0, 0));
    }

    #[test]
    fn bad_input_is_refused_not_written() {
        let mut w = OggOpusWriter::new(Vec::new(), 2, 1, "t").unwrap();
        assert!(matches!(w.push(0, &[]), Err(OggError::BadPacket(_))));
        w.push(0, &SILENCE_20MS).unwrap();
        assert!(matches!(
            w.push(960 + MAX_GAP_SAMPLES + 1, &SILENCE_20MS),
            Err(OggError::Discontinuity(_))
        ));
        let data = w.finish().unwrap();
        let r = OggOpusReader::parse(&data).unwrap();
        assert_eq!((r.channels, r.packets.len()), (2, 1));
        // A flipped byte fails the CRC.
        let mut broken = data.clone();
        let n = broken.len();
        broken[n - 2] ^= 0x40;
        assert!(OggOpusReader::parse(&broken).is_err());
        assert!(OggOpusReader::parse(b"garbage").is_err());
    }
}
