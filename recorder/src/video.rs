//! Video tracks in Matroska: VP8, VP9 and AV1 as WebM, H264 as Matroska (`.mkv`).
//!
//! RTP payloads are depacketised into frames (one frame per RTP timestamp, ended by
//! the marker bit or the next timestamp) and written as SimpleBlocks. The file starts
//! at a keyframe: until one arrives nothing is written, and after a lost packet the
//! writer waits for the next keyframe rather than write a frame the decoder cannot
//! use. The header goes out with the first keyframe, because H264's `avcC` and the
//! picture size come from it.
//!
//! Segment and clusters have unknown sizes (a live-written file is readable up to
//! its last complete block even if the recorder dies); the duration is patched in at
//! the end.

use std::io::{Seek, SeekFrom, Write};

use media_core::TapPacket;
use media_core::str0m::format::Codec;

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{0:?} is not recorded")]
    Unsupported(Codec),
    #[error("bad RTP payload: {0}")]
    BadPayload(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The file extension for a video codec the recorder writes.
pub fn video_extension(c: Codec) -> Option<&'static str> {
    match c {
        Codec::Vp8 | Codec::Vp9 | Codec::Av1 => Some("webm"),
        Codec::H264 => Some("mkv"),
        _ => None,
    }
}

const CLOCK: f64 = 90_000.0;
/// A cluster's blocks carry 16-bit offsets from its timestamp.
const MAX_CLUSTER_MS: i64 = 30_000;

pub struct VideoWriter<W: Write + Seek> {
    out: W,
    codec: Codec,
    /// The frame being assembled: its RTP time and bytes.
    frame: Vec<u8>,
    frame_ts: Option<i64>,
    frame_key: bool,
    frame_broken: bool,
    last_seq: Option<u64>,
    /// H264: where the FU-A being reassembled starts in `frame`.
    fu_start: Option<usize>,
    /// AV1: an OBU continued in the next packet.
    obu_pending: Vec<u8>,
    /// H264 parameter sets, for `avcC`.
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    first_ts: Option<i64>,
    last_ms: i64,
    prev_ms: i64,
    cluster_ms: Option<i64>,
    duration_pos: Option<u64>,
    flushed_ms: i64,
    need_keyframe: bool,
    pub frames: u64,
    pub frames_skipped: u64,
}

impl<W: Write + Seek> VideoWriter<W> {
    pub fn new(out: W, codec: Codec) -> Result<Self, VideoError> {
        if video_extension(codec).is_none() {
            return Err(VideoError::Unsupported(codec));
        }
        Ok(VideoWriter {
            out,
            codec,
            frame: Vec::with_capacity(64 * 1024),
            frame_ts: None,
            frame_key: false,
            frame_broken: false,
            last_seq: None,
            fu_start: None,
            obu_pending: Vec::new(),
            sps: None,
            pps: None,
            first_ts: None,
            last_ms: 0,
            prev_ms: 0,
            cluster_ms: None,
            duration_pos: None,
            flushed_ms: 0,
            need_keyframe: true,
            frames: 0,
            frames_skipped: 0,
        })
    }

    /// True once the first keyframe is written.
    pub fn started(&self) -> bool {
        self.first_ts.is_some()
    }

    pub fn push(&mut self, p: &TapPacket) -> Result<(), VideoError> {
        if self.frame_ts.is_some_and(|t| t != p.rtp_time) {
            self.end_frame()?;
        }
        if self.last_seq.is_some_and(|s| p.seq != s + 1) {
            // A packet of this or an earlier frame is missing.
            self.frame_broken = true;
            self.need_keyframe = true;
            self.obu_pending.clear();
        }
        self.last_seq = Some(p.seq);
        if self.frame_ts.is_none() {
            self.frame_ts = Some(p.rtp_time);
            self.frame.clear();
            self.frame_key = false;
            self.frame_broken = false;
        }
        let first_of_frame = self.frame.is_empty();
        let r = match self.codec {
            Codec::Vp8 => self.vp8(&p.payload, first_of_frame),
            Codec::Vp9 => self.vp9(&p.payload),
            Codec::H264 => self.h264(&p.payload),
            Codec::Av1 => self.av1(&p.payload),
            c => Err(VideoError::Unsupported(c)),
        };
        if let Err(e) = r {
            self.frame_broken = true;
            self.need_keyframe = true;
            return Err(e);
        }
        if p.marker {
            self.end_frame()?;
        }
        Ok(())
    }

    fn vp8(&mut self, b: &[u8], _first: bool) -> Result<(), VideoError> {
        let mut i = 1;
        let b0 = *b.first().ok_or(VideoError::BadPayload("empty"))?;
        if b0 & 0x80 != 0 {
            let x = *b.get(1).ok_or(VideoError::BadPayload("short"))?;
            i = 2;
            if x & 0x80 != 0 {
                let m = *b.get(i).ok_or(VideoError::BadPayload("short"))?;
                i += if m & 0x80 != 0 { 2 } else { 1 };
            }
            if x & 0x40 != 0 {
                i += 1;
            }
            if x & 0x30 != 0 {
                i += 1;
            }
        }
        let data = b.get(i..).ok_or(VideoError::BadPayload("short"))?;
        let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
        if start && let Some(h) = data.first() {
            self.frame_key = h & 0x01 == 0;
        }
        self.frame.extend_from_slice(data);
        Ok(())
    }

    fn vp9(&mut self, b: &[u8]) -> Result<(), VideoError> {
        let b0 = *b.first().ok_or(VideoError::BadPayload("empty"))?;
        let (pic_id, inter, layers, flexible, start, _end, ss) = (
            b0 & 0x80 != 0,
            b0 & 0x40 != 0,
            b0 & 0x20 != 0,
            b0 & 0x10 != 0,
            b0 & 0x08 != 0,
            b0 & 0x04 != 0,
            b0 & 0x02 != 0,
        );
        let mut i = 1;
        let at = |i: usize| b.get(i).copied().ok_or(VideoError::BadPayload("short"));
        if pic_id {
            i += if at(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        let mut sid = 0;
        if layers {
            sid = (at(i)? >> 1) & 0x07;
            i += if flexible { 1 } else { 2 };
        }
        if flexible && inter {
            loop {
                let d = at(i)?;
                i += 1;
                if d & 0x01 == 0 {
                    break;
                }
            }
        }
        if ss {
            let s = at(i)?;
            i += 1;
            let n_s = usize::from(s >> 5) + 1;
            if s & 0x10 != 0 {
                i += 4 * n_s;
            }
            if s & 0x08 != 0 {
                let n_g = at(i)?;
                i += 1;
                for _ in 0..n_g {
                    let g = at(i)?;
                    i += 1 + usize::from((g >> 2) & 0x03);
                }
            }
        }
        let data = b.get(i..).ok_or(VideoError::BadPayload("short"))?;
        if start && sid == 0 && !inter {
            self.frame_key = true;
        }
        self.frame.extend_from_slice(data);
        Ok(())
    }

    fn h264(&mut self, b: &[u8]) -> Result<(), VideoError> {
        let h = *b.first().ok_or(VideoError::BadPayload("empty"))?;
        match h & 0x1f {
            1..=23 => self.h264_nal(b),
            24 => {
                let mut i = 1;
                while i + 2 <= b.len() {
                    let n = usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
                    i += 2;
                    let nal = b.get(i..i + n).ok_or(VideoError::BadPayload("STAP-A"))?;
                    self.h264_nal(nal);
                    i += n;
                }
            }
            28 => {
                let fu = *b.get(1).ok_or(VideoError::BadPayload("FU-A"))?;
                let data = &b[2..];
                if fu & 0x80 != 0 {
                    // Start: a new NAL, its header rebuilt from the indicator.
                    let header = (h & 0xe0) | (fu & 0x1f);
                    self.frame.extend_from_slice(&[0, 0, 0, 0, header]);
                    self.fu_start = Some(self.frame.len() - 5);
                    if fu & 0x1f == 5 {
                        self.frame_key = true;
                    }
                } else if self.fu_start.is_none() {
                    return Err(VideoError::BadPayload("FU-A without its start"));
                }
                self.frame.extend_from_slice(data);
                if fu & 0x40 != 0
                    && let Some(s) = self.fu_start.take()
                {
                    let n = (self.frame.len() - s - 4) as u32;
                    self.frame[s..s + 4].copy_from_slice(&n.to_be_bytes());
                }
            }
            _ => return Err(VideoError::BadPayload("unsupported H264 packetisation")),
        }
        Ok(())
    }

    fn h264_nal(&mut self, nal: &[u8]) {
        let Some(&h) = nal.first() else { return };
        match h & 0x1f {
            5 => self.frame_key = true,
            7 => self.sps = Some(nal.to_vec()),
            8 => self.pps = Some(nal.to_vec()),
            _ => {}
        }
        self.frame
            .extend_from_slice(&(nal.len() as u32).to_be_bytes());
        self.frame.extend_from_slice(nal);
    }

    fn av1(&mut self, b: &[u8]) -> Result<(), VideoError> {
        let agg = *b.first().ok_or(VideoError::BadPayload("empty"))?;
        let (z, y, w, n) = (
            agg & 0x80 != 0,
            agg & 0x40 != 0,
            usize::from((agg >> 4) & 0x03),
            agg & 0x08 != 0,
        );
        if n {
            self.frame_key = true;
        }
        let mut i = 1;
        let mut k = 0;
        while i < b.len() {
            k += 1;
            let len = if w == 0 || k < w {
                let (v, used) = leb128(&b[i..]).ok_or(VideoError::BadPayload("OBU length"))?;
                i += used;
                v as usize
            } else {
                b.len() - i
            };
            let elem = b
                .get(i..i + len)
                .ok_or(VideoError::BadPayload("OBU element"))?;
            i += len;
            let continues = k == 1 && z;
            let last = i >= b.len();
            if !continues {
                self.flush_obu();
            }
            self.obu_pending.extend_from_slice(elem);
            if !(last && y) {
                self.flush_obu();
            }
        }
        Ok(())
    }

    /// Writes a whole OBU in low-overhead form (with its size field); drops temporal
    /// delimiters (Matroska's rule).
    fn flush_obu(&mut self) {
        if self.obu_pending.is_empty() {
            return;
        }
        let obu = std::mem::take(&mut self.obu_pending);
        let h = obu[0];
        let kind = (h >> 3) & 0x0f;
        let ext = usize::from(h & 0x04 != 0);
        if kind != 2 && obu.len() > ext {
            let body = &obu[1 + ext..];
            if kind == 1 && self.sps.is_none() {
                let mut seq = vec![h | 0x02];
                seq.extend_from_slice(&obu[1..1 + ext]);
                put_leb128(&mut seq, body.len() as u64);
                seq.extend_from_slice(body);
                self.sps = Some(seq);
            }
            self.frame.push(h | 0x02);
            self.frame.extend_from_slice(&obu[1..1 + ext]);
            put_leb128(&mut self.frame, body.len() as u64);
            self.frame.extend_from_slice(body);
        }
        self.obu_pending = obu;
        self.obu_pending.clear();
    }

    fn end_frame(&mut self) -> Result<(), VideoError> {
        self.flush_obu();
        let Some(ts) = self.frame_ts.take() else {
            return Ok(());
        };
        let key = self.frame_key;
        if self.frame_broken || self.frame.is_empty() || (self.need_keyframe && !key) {
            self.frames_skipped += 1;
            return Ok(());
        }
        if self.first_ts.is_none() {
            self.write_header()?;
            self.first_ts = Some(ts);
        }
        self.need_keyframe = false;
        let first = self.first_ts.unwrap_or(ts);
        let ms = ((ts - first) as f64 * 1000.0 / CLOCK).round() as i64;
        if ms < self.last_ms {
            self.frames_skipped += 1;
            return Ok(());
        }
        let new_cluster = match self.cluster_ms {
            None => true,
            Some(c) => key || ms - c > MAX_CLUSTER_MS,
        };
        if new_cluster {
            // What is buffered reaches the file at every cluster (each keyframe, at
            // least every 30 s) and every second, so a recorder that dies loses little.
            self.out.flush()?;
            self.flushed_ms = ms;
            self.out.write_all(&[0x1f, 0x43, 0xb6, 0x75])?;
            self.out.write_all(&UNKNOWN_SIZE)?;
            write_uint(&mut self.out, 0xe7, ms as u64)?;
            self.cluster_ms = Some(ms);
        }
        let rel = (ms - self.cluster_ms.unwrap_or(ms)) as i16;
        let mut block = Vec::with_capacity(4);
        block.push(0x81); // track 1
        block.extend_from_slice(&rel.to_be_bytes());
        block.push(if key { 0x80 } else { 0x00 });
        write_id_size(&mut self.out, 0xa3, block.len() + self.frame.len())?;
        self.out.write_all(&block)?;
        self.out.write_all(&self.frame)?;
        if ms > self.last_ms {
            self.prev_ms = self.last_ms;
        }
        self.last_ms = ms;
        self.frames += 1;
        if ms - self.flushed_ms >= 1000 {
            self.out.flush()?;
            self.flushed_ms = ms;
        }
        Ok(())
    }

    fn write_header(&mut self) -> Result<(), VideoError> {
        let (doc, codec_id) = match self.codec {
            Codec::Vp8 => ("webm", "V_VP8"),
            Codec::Vp9 => ("webm", "V_VP9"),
            Codec::Av1 => ("webm", "V_AV1"),
            Codec::H264 => ("matroska", "V_MPEG4/ISO/AVC"),
            c => return Err(VideoError::Unsupported(c)),
        };
        let mut ebml = Vec::new();
        put_uint(&mut ebml, 0x4286, 1);
        put_uint(&mut ebml, 0x42f7, 1);
        put_uint(&mut ebml, 0x42f2, 4);
        put_uint(&mut ebml, 0x42f3, 8);
        put_bytes(&mut ebml, 0x4282, doc.as_bytes());
        put_uint(&mut ebml, 0x4287, 4);
        put_uint(&mut ebml, 0x4285, 2);
        let mut head = Vec::new();
        put_bytes(&mut head, 0x1a45dfa3, &ebml);
        head.extend_from_slice(&[0x18, 0x53, 0x80, 0x67]);
        head.extend_from_slice(&UNKNOWN_SIZE);
        let mut info = Vec::new();
        put_uint(&mut info, 0x2ad7b1, 1_000_000);
        put_bytes(&mut info, 0x4d80, b"StreamCore");
        put_bytes(&mut info, 0x5741, b"StreamCore recorder");
        let duration_at = info.len() + 3; // after the id (2) and size (1) of Duration
        put_bytes(&mut info, 0x4489, &0f64.to_be_bytes());
        let info_start = head.len();
        put_bytes(&mut head, 0x1549a966, &info);
        // Info's id (4) and one-byte size precede its content.
        let duration_pos = info_start + 5 + duration_at;
        let mut entry = Vec::new();
        put_uint(&mut entry, 0xd7, 1);
        put_uint(&mut entry, 0x73c5, 1);
        put_uint(&mut entry, 0x83, 1);
        put_bytes(&mut entry, 0x86, codec_id.as_bytes());
        if let Some(private) = self.codec_private() {
            put_bytes(&mut entry, 0x63a2, &private);
        }
        if let Some((w, h)) = self.picture_size() {
            let mut video = Vec::new();
            put_uint(&mut video, 0xb0, u64::from(w));
            put_uint(&mut video, 0xba, u64::from(h));
            put_bytes(&mut entry, 0xe0, &video);
        }
        let mut tracks = Vec::new();
        put_bytes(&mut tracks, 0xae, &entry);
        put_bytes(&mut head, 0x1654ae6b, &tracks);
        let base = self.out.stream_position()?;
        self.out.write_all(&head)?;
        self.duration_pos = Some(base + duration_pos as u64);
        Ok(())
    }

    fn codec_private(&self) -> Option<Vec<u8>> {
        match self.codec {
            Codec::H264 => {
                let (sps, pps) = (self.sps.as_ref()?, self.pps.as_ref()?);
                if sps.len() < 4 {
                    return None;
                }
                let mut c = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
                c.extend_from_slice(&(sps.len() as u16).to_be_bytes());
                c.extend_from_slice(sps);
                c.push(1);
                c.extend_from_slice(&(pps.len() as u16).to_be_bytes());
                c.extend_from_slice(pps);
                Some(c)
            }
            Codec::Av1 => {
                // av1C: marker/version, profile (from the sequence header), the rest
                // left to the sequence header carried as configOBUs.
                let seq = self.sps.as_ref()?;
                let body_start = seq.iter().skip(1).position(|b| b & 0x80 == 0)? + 2;
                let profile = seq.get(body_start).map_or(0, |b| b >> 5);
                let mut c = vec![0x81, profile << 5, 0x0c, 0x00];
                c.extend_from_slice(seq);
                Some(c)
            }
            _ => None,
        }
    }

    /// Width and height (Matroska wants them): from the first keyframe (VP8, VP9),
    /// the SPS (H264) or the sequence header (AV1).
    fn picture_size(&self) -> Option<(u16, u16)> {
        let f = &self.frame;
        match self.codec {
            Codec::Vp8 if f.len() >= 10 && f[3..6] == [0x9d, 0x01, 0x2a] => Some((
                u16::from_le_bytes([f[6], f[7]]) & 0x3fff,
                u16::from_le_bytes([f[8], f[9]]) & 0x3fff,
            )),
            Codec::Vp9 => vp9_size(f),
            Codec::H264 => h264_size(self.sps.as_deref()?),
            Codec::Av1 => av1_size(self.sps.as_deref()?),
            _ => None,
        }
    }

    /// Ends the last frame, patches the duration, flushes. Returns the output and the
    /// duration in milliseconds (0 when no keyframe ever came).
    pub fn finish(mut self) -> Result<(W, f64), VideoError> {
        self.end_frame()?;
        let mut ms = 0.0;
        if let Some(pos) = self.duration_pos {
            // The last frame lasts as long as the one before it.
            let step = (self.last_ms - self.prev_ms).max(0);
            ms = (self.last_ms + step) as f64;
            let end = self.out.stream_position()?;
            self.out.seek(SeekFrom::Start(pos))?;
            self.out.write_all(&ms.to_be_bytes())?;
            self.out.seek(SeekFrom::Start(end))?;
        }
        self.out.flush()?;
        Ok((self.out, ms))
    }
}

/// An EBML element ID (1–4 bytes, its length marker kept) at the start of `b`.
fn read_id(b: &[u8]) -> Option<(u32, usize)> {
    let first = *b.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 4 {
        return None;
    }
    let bytes = b.get(..len)?;
    Some((
        bytes.iter().fold(0u32, |v, x| (v << 8) | u32::from(*x)),
        len,
    ))
}

/// An EBML size (1–8 bytes); `None` inside for "unknown".
fn read_size(b: &[u8]) -> Option<(Option<u64>, usize)> {
    let first = *b.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let bytes = b.get(..len)?;
    let mask = if len == 8 { 0 } else { 0xffu8 >> len };
    let mut v = u64::from(first & mask);
    let mut all_ones = (first & mask) == mask;
    for x in &bytes[1..] {
        v = (v << 8) | u64::from(*x);
        all_ones &= *x == 0xff;
    }
    Some(((!all_ones).then_some(v), len))
}

/// Cuts a Matroska file this writer made back to its last complete block (what a
/// recorder that died mid-write leaves), and writes the duration the blocks cover.
/// Returns that duration in milliseconds; 0 when not even the header reached the disk.
pub fn repair_matroska(path: &std::path::Path) -> Result<f64, VideoError> {
    let data = std::fs::read(path)?;
    let mut good = 0usize; // everything before this is whole
    let mut duration_at = None;
    let (mut cluster_ms, mut last, mut prev) = (0i64, None::<i64>, 0i64);
    let mut i = 0;
    let mut seen_tracks = false;
    // Top level: the EBML header, then the segment (unknown size) and its children;
    // clusters (unknown size) hold a timestamp and blocks, and end at the next cluster.
    while i < data.len() {
        let Some((id, il)) = read_id(&data[i..]) else {
            break;
        };
        let Some((size, sl)) = read_size(&data[i + il..]) else {
            break;
        };
        let body = i + il + sl;
        match (id, size) {
            (0x1853_8067, _) | (0x1f43_b675, None) => {
                // Segment or live cluster: descend.
                i = body;
                if id == 0x1f43_b675 {
                    good = i;
                }
                continue;
            }
            (_, None) => break,
            (_, Some(n)) => {
                let end = body + n as usize;
                if end > data.len() {
                    break; // torn
                }
                match id {
                    0x1549_a966 => {
                        // Info: find Duration's float.
                        let mut j = body;
                        while j < end {
                            let Some((cid, cil)) = read_id(&data[j..]) else {
                                break;
                            };
                            let Some((Some(cn), csl)) = read_size(&data[j + cil..]) else {
                                break;
                            };
                            if cid == 0x4489 && cn == 8 {
                                duration_at = Some(j + cil + csl);
                            }
                            j += cil + csl + cn as usize;
                        }
                    }
                    0x1654_ae6b => seen_tracks = true,
                    0xe7 => {
                        cluster_ms = data[body..end]
                            .iter()
                            .fold(0i64, |v, x| (v << 8) | i64::from(*x));
                    }
                    0xa3 if end - body >= 4 => {
                        let rel = i16::from_be_bytes([data[body + 1], data[body + 2]]);
                        let t = cluster_ms + i64::from(rel);
                        if let Some(l) = last
                            && t > l
                        {
                            prev = l;
                        }
                        last = Some(t.max(last.unwrap_or(t)));
                    }
                    _ => {}
                }
                i = end;
                good = i;
            }
        }
    }
    if !seen_tracks {
        good = 0;
    }
    let ms = match last {
        Some(l) if seen_tracks => (l + (l - prev).max(0)) as f64,
        _ => 0.0,
    };
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    if good < data.len() {
        f.set_len(good as u64)?;
    }
    if let Some(at) = duration_at.filter(|a| a + 8 <= good) {
        f.seek(SeekFrom::Start(at as u64))?;
        f.write_all(&ms.to_be_bytes())?;
    }
    f.sync_all()?;
    Ok(ms)
}

/// VP9 keyframe uncompressed header → frame size.
fn vp9_size(f: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bits { data: f, pos: 0 };
    if r.read(2)? != 2 {
        return None;
    }
    let profile = r.read(1)? | (r.read(1)? << 1);
    if profile == 3 {
        r.read(1)?;
    }
    if r.read(1)? == 1 {
        return None; // show_existing_frame
    }
    if r.read(1)? != 0 {
        return None; // not a keyframe
    }
    r.read(2)?; // show_frame, error_resilient_mode
    if r.read(24)? != 0x49_83_42 {
        return None;
    }
    if profile >= 2 {
        r.read(1)?;
    }
    let color_space = r.read(3)?;
    if color_space != 7 {
        r.read(1)?;
        if profile == 1 || profile == 3 {
            r.read(3)?;
        }
    } else if profile == 1 || profile == 3 {
        r.read(1)?;
    }
    let w = r.read(16)? + 1;
    let h = r.read(16)? + 1;
    Some((w as u16, h as u16))
}

/// H264 SPS (with its NAL header) → cropped frame size (ITU-T H.264 §7.3.2.1.1).
fn h264_size(nal: &[u8]) -> Option<(u16, u16)> {
    // Emulation prevention bytes out.
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits {
        data: &rbsp,
        pos: 0,
    };
    let profile = r.read(8)?;
    r.read(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        chroma = r.ue()?;
        if chroma == 3 {
            r.read(1)?;
        }
        r.ue()?;
        r.ue()?;
        r.read(1)?;
        if r.read(1)? == 1 {
            for i in 0..if chroma == 3 { 12 } else { 8 } {
                if r.read(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.read(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.read(1)?;
    let w_mbs = r.ue()? + 1;
    let h_units = r.ue()? + 1;
    let frame_mbs_only = r.read(1)?;
    if frame_mbs_only == 0 {
        r.read(1)?;
    }
    r.read(1)?;
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.read(1)? == 1 {
        (cl, cr, ct, cb) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    }
    let (cx, cy) = match chroma {
        0 | 3 => (1, 2 - frame_mbs_only),
        2 => (2, 2 - frame_mbs_only),
        _ => (2, 2 * (2 - frame_mbs_only)),
    };
    let w = (w_mbs * 16).checked_sub(cx * (cl + cr))?;
    let h = ((2 - frame_mbs_only) * h_units * 16).checked_sub(cy * (ct + cb))?;
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

/// The payload of a low-overhead AV1 OBU (header, extension, size) and its header byte.
fn obu_payload(obu: &[u8]) -> Option<&[u8]> {
    let h = *obu.first()?;
    let at = 1 + usize::from(h & 0x04 != 0);
    let (len, used) = leb128(obu.get(at..)?)?;
    obu.get(at + used..at + used + len as usize)
}

/// AV1 sequence header → max frame size (AV1 spec §5.5).
fn av1_size(obu: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bits {
        data: obu_payload(obu)?,
        pos: 0,
    };
    r.read(3)?; // seq_profile
    r.read(1)?; // still_picture
    if r.read(1)? == 1 {
        r.read(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model = false;
        let mut delay_len = 0;
        if r.read(1)? == 1 {
            // timing_info
            r.read(32)?;
            r.read(32)?;
            if r.read(1)? == 1 {
                r.uvlc()?;
            }
            if r.read(1)? == 1 {
                decoder_model = true;
                delay_len = r.read(5)? as usize + 1;
                r.read(32)?;
                r.read(10)?;
            }
        }
        let initial_display_delay = r.read(1)? == 1;
        for _ in 0..=r.read(5)? {
            r.read(12)?;
            if r.read(5)? > 7 {
                r.read(1)?;
            }
            if decoder_model && r.read(1)? == 1 {
                r.read(delay_len)?;
                r.read(delay_len)?;
                r.read(1)?;
            }
            if initial_display_delay && r.read(1)? == 1 {
                r.read(4)?;
            }
        }
    }
    let wb = r.read(4)? as usize + 1;
    let hb = r.read(4)? as usize + 1;
    let w = r.read(wb)? + 1;
    let h = r.read(hb)? + 1;
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        if n > 32 {
            return None;
        }
        let mut v = 0u64;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | u64::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        u32::try_from(v).ok()
    }

    /// Exp-Golomb, unsigned.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.read(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.read(zeros)?)
    }

    /// Exp-Golomb, signed.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// AV1's uvlc.
    fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.read(1)? == 0 {
            zeros += 1;
            if zeros >= 32 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.read(zeros)?)
    }
}

fn leb128(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(8) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn put_leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

fn id_bytes(id: u32) -> Vec<u8> {
    let b = id.to_be_bytes();
    let skip = b.iter().position(|x| *x != 0).unwrap_or(3);
    b[skip..].to_vec()
}

/// EBML variable-size integer of the smallest width.
fn size_bytes(n: usize) -> Vec<u8> {
    let n = n as u64;
    for len in 1..=8u32 {
        if n < (1u64 << (7 * len)) - 1 {
            let v = n | (1u64 << (7 * len));
            return v.to_be_bytes()[(8 - len as usize)..].to_vec();
        }
    }
    UNKNOWN_SIZE.to_vec()
}

fn put_bytes(out: &mut Vec<u8>, id: u32, data: &[u8]) {
    out.extend_from_slice(&id_bytes(id));
    out.extend_from_slice(&size_bytes(data.len()));
    out.extend_from_slice(data);
}

fn put_uint(out: &mut Vec<u8>, id: u32, v: u64) {
    let b = v.to_be_bytes();
    let skip = b.iter().position(|x| *x != 0).unwrap_or(7);
    put_bytes(out, id, &b[skip..]);
}

fn write_uint<W: Write>(out: &mut W, id: u32, v: u64) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(12);
    put_uint(&mut buf, id, v);
    out.write_all(&buf)
}

fn write_id_size<W: Write>(out: &mut W, id: u32, len: usize) -> std::io::Result<()> {
    out.write_all(&id_bytes(id))?;
    out.write_all(&size_bytes(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_core::str0m::media::Mid;
    use media_core::{PeerId, TrackRef};
    use std::io::Cursor;
    use std::time::Instant;

    fn pkt(seq: u64, ts: i64, marker: bool, payload: Vec<u8>) -> TapPacket {
        TapPacket {
            track: TrackRef {
                owner: PeerId(1),
                mid: Mid::from("1"),
            },
            seq,
            rtp_time: ts,
            marker,
            payload: payload.into(),
            arrival: Instant::now(),
            sender_clock: None,
        }
    }

    /// A VP8 payload: descriptor (S bit, partition 0) then the frame's first bytes.
    fn vp8(key: bool, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0x10];
        if key {
            p.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        } else {
            p.push(0x01);
        }
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn picture_sizes_come_from_h264_sps_and_av1_sequence_headers() {
        // x264's SPS of a 320x240 stream (constrained baseline).
        let sps = [
            0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xe8, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40,
            0x00, 0x00, 0x0f, 0x23, 0xc5, 0x0a, 0xa8,
        ];
        assert_eq!(h264_size(&sps), Some((320, 240)));
        // 1920x1080 (cropped from 1088) high profile.
        let sps_hd = [
            0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00,
            0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
        ];
        assert_eq!(h264_size(&sps_hd), Some((1920, 1080)));
        // libaom's sequence header of a 320x240 stream, as an OBU with its size.
        let seq = [
            0x0a, 0x0b, 0x00, 0x00, 0x00, 0x04, 0x3c, 0xff, 0xbc, 0xda, 0x80, 0x10, 0x10,
        ];
        assert_eq!(av1_size(&seq), Some((320, 240)));
        assert_eq!(h264_size(&[0x67]), None);
        assert_eq!(av1_size(&[0x0a, 0x00]), None);
    }

    #[test]
    fn a_file_cut_mid_block_is_repaired_to_its_last_whole_block() {
        let mut w = VideoWriter::new(Cursor::new(Vec::new()), Codec::Vp8).unwrap();
        for (i, key) in [true, false, false, true, false].into_iter().enumerate() {
            let ts = i as i64 * 3000;
            w.push(&pkt(i as u64 + 1, ts, true, vp8(key, &[7u8; 200])))
                .unwrap();
        }
        // A recorder killed now: no finish, so no duration; then a torn write.
        let mut data = w.out.get_ref().clone();
        let whole = data.len();
        data.extend_from_slice(&[0xa3, 0x40, 0xd0, 0x81, 0x00]); // a block's start only
        let path = std::env::temp_dir().join(format!("sc-mkv-{}.webm", std::process::id()));
        std::fs::write(&path, &data).unwrap();
        let ms = repair_matroska(&path).unwrap();
        // Frames at 0, 33, 67, 100 (new cluster) and 133 ms; the last lasts one step.
        assert_eq!(ms, 166.0);
        let fixed = std::fs::read(&path).unwrap();
        assert_eq!(fixed.len(), whole);
        // The duration is in the header now, and repairing again changes nothing.
        assert!(
            fixed
                .windows(10)
                .any(|x| x[..2] == [0x44, 0x89] && x[3..] == 166.0f64.to_be_bytes()[..7])
        );
        assert_eq!(repair_matroska(&path).unwrap(), 166.0);
        assert_eq!(std::fs::read(&path).unwrap().len(), whole);
        // Nothing but a torn header: nothing is left.
        std::fs::write(&path, &fixed[..20]).unwrap();
        assert_eq!(repair_matroska(&path).unwrap(), 0.0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn ebml_sizes_are_minimal() {
        assert_eq!(size_bytes(0), [0x80]);
        assert_eq!(size_bytes(126), [0xfe]);
        assert_eq!(size_bytes(127), [0x40, 0x7f]);
        assert_eq!(id_bytes(0x1a45dfa3), [0x1a, 0x45, 0xdf, 0xa3]);
        assert_eq!(id_bytes(0xa3), [0xa3]);
        let mut v = Vec::new();
        put_leb128(&mut v, 300);
        assert_eq!(leb128(&v), Some((300, 2)));
    }

    #[test]
    fn waits_for_a_keyframe_and_again_after_loss() {
        let mut w = VideoWriter::new(Cursor::new(Vec::new()), Codec::Vp8).unwrap();
        w.push(&pkt(1, 0, true, vp8(false, b"delta"))).unwrap();
        assert!(!w.started());
        w.push(&pkt(2, 3000, true, vp8(true, b"key"))).unwrap();
        assert!(w.started());
        w.push(&pkt(3, 6000, true, vp8(false, b"d1"))).unwrap();
        // 4 lost: the next delta is skipped, the next keyframe resumes.
        w.push(&pkt(5, 12000, true, vp8(false, b"d3"))).unwrap();
        w.push(&pkt(6, 15000, true, vp8(true, b"k2"))).unwrap();
        assert_eq!(w.frames, 3);
        assert_eq!(w.frames_skipped, 2);
        let (out, ms) = w.finish().unwrap();
        // Frames at 0, 33 and 133 ms; the last lasts as long as the step before it.
        assert_eq!(ms, 233.0);
        let data = out.into_inner();
        assert_eq!(&data[..4], &[0x1a, 0x45, 0xdf, 0xa3]);
        assert!(data.windows(5).any(|x| x == b"V_VP8"));
        // Picture size 640x480 from the keyframe header.
        assert!(data.windows(3).any(|x| x == [0xb0, 0x82, 0x02]));
    }

    #[test]
    fn h264_fu_a_and_stap_a_become_length_prefixed_nals_with_avcc() {
        let mut w = VideoWriter::new(Cursor::new(Vec::new()), Codec::H264).unwrap();
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xaa];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut stap = vec![0x78];
        for n in [&sps[..], &pps[..]] {
            stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
            stap.extend_from_slice(n);
        }
        w.push(&pkt(1, 0, false, stap)).unwrap();
        w.push(&pkt(2, 0, false, vec![0x7c, 0x85, 1, 2, 3]))
            .unwrap();
        w.push(&pkt(3, 0, true, vec![0x7c, 0x45, 4, 5])).unwrap();
        assert!(w.started());
        let (out, _) = w.finish().unwrap();
        let data = out.into_inner();
        // The IDR reassembled: length 6, header 0x65, then the fragments' bytes.
        assert!(
            data.windows(10)
                .any(|x| x == [0, 0, 0, 6, 0x65, 1, 2, 3, 4, 5])
        );
        assert!(
            data.windows(6)
                .any(|x| x == [1, 0x42, 0xc0, 0x1f, 0xff, 0xe1])
        );
    }
}
