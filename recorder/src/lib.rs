//! # recorder: per-track recording of rooms
//!
//! Today: the container writers the recorder will spool tracks into, starting with
//! Ogg Opus ([`ogg`], RFC 7845) and a reader for it used to check what was written.
//! The recording pipeline (bounded hand-off from the SFU, spool, upload to the object
//! store, recovery after a restart) is the open part of the "Recording" issue.
//!
//! Invariants:
//! - Writers take RTP payloads with their RTP timestamps and produce a file whose
//!   duration is the media time covered, gaps included: missing time (DTX, loss) is
//!   written as silence, never squeezed out.
//! - Writers do no IO of their own beyond the `Write` they are given, and never panic
//!   on packet contents.

pub mod ogg;

pub use ogg::{OggError, OggOpusReader, OggOpusWriter, opus_packet_samples};
