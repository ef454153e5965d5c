//! RTP payloads, shared without copying and recycled once nobody holds them.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::rtp_::Mid;

/// The payload of an RTP packet (no header): cheap to clone, shared by every clone.
///
/// An SFU hands one received payload to many senders; each keeps a clone in its send
/// queue and RTX cache. The session that received it keeps one more in its
/// [`PayloadPool`], and writes the next received payload into the same buffer once
/// every other clone is gone, so a steady stream of packets allocates nothing. The
/// empty payload (`Payload::default()`, padding) holds no buffer.
#[derive(Clone, Default)]
pub struct Payload(Option<Arc<Vec<u8>>>);

impl Payload {
    /// Whether both are clones of the same buffer (two empty payloads are).
    pub fn ptr_eq(a: &Payload, b: &Payload) -> bool {
        match (&a.0, &b.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    fn new(data: Vec<u8>) -> Self {
        Payload(Some(Arc::new(data)))
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Some(buf) => buf,
            None => &[],
        }
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self[..], f)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload::new(v)
    }
}

impl From<&[u8]> for Payload {
    fn from(v: &[u8]) -> Self {
        Payload::new(v.to_vec())
    }
}

impl<const N: usize> From<[u8; N]> for Payload {
    fn from(v: [u8; N]) -> Self {
        Payload::new(v.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(v: &[u8; N]) -> Self {
        Payload::new(v.to_vec())
    }
}

impl From<Arc<[u8]>> for Payload {
    fn from(v: Arc<[u8]>) -> Self {
        Payload::new(v.to_vec())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self[..] == other[..]
    }
}

impl Eq for Payload {}

impl std::hash::Hash for Payload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self[..].hash(state)
    }
}

impl PartialEq<[u8]> for Payload {
    fn eq(&self, other: &[u8]) -> bool {
        self[..] == *other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Payload {
    fn eq(&self, other: &[u8; N]) -> bool {
        self[..] == other[..]
    }
}

/// The buffers a session made its received payloads in, oldest first.
///
/// Payloads are released roughly in the order they were made (send queues drain and
/// RTX caches evict oldest first), so only the oldest few are looked at: the first that
/// nobody else holds is reused and moves to the back; the held ones before it keep their
/// place, oldest first, as they are the next to be released. When all of them are held,
/// they move to the back, so that payloads somebody keeps for long do not stop the reuse
/// of the others, and a new buffer is made. (Moving each held one to the back as it was
/// looked at mixed recent buffers in among the oldest, and a keyframe's fan-out, still
/// in the RTX caches, then filled the window: a new buffer every 1.5 s at video N = 10.)
/// The pool therefore grows to the number of payloads alive at once and stays there;
/// past `MAX_POOLED` new buffers are made outside it (as without a pool). It is freed
/// with the session.
#[derive(Debug, Default)]
struct PayloadPool {
    buffers: VecDeque<Arc<Vec<u8>>>,
    /// The largest payload so far: every buffer is made (or grown) that large, since
    /// any buffer may hold any later payload.
    largest: usize,
}

/// How many of the oldest buffers one payload looks at.
const TRIES: usize = 32;

/// Enough for about 4 s of a 10 Mbit/s video publisher's packets.
const MAX_POOLED: usize = 4096;

impl PayloadPool {
    /// A payload holding a copy of `data`.
    fn copy_of(&mut self, data: &[u8]) -> Payload {
        if data.is_empty() {
            return Payload::default();
        }
        self.largest = self.largest.max(data.len());
        let tries = TRIES.min(self.buffers.len());
        let free = self
            .buffers
            .iter_mut()
            .take(tries)
            .position(|b| Arc::get_mut(b).is_some());
        if let Some(mut reused) = free.and_then(|i| self.buffers.remove(i)) {
            let buf = Arc::get_mut(&mut reused).expect("nobody else holds it");
            buf.clear();
            // To the largest payload yet, once: growing to each payload's size would
            // grow a buffer again and again as sizes vary, and amortised growth would
            // double it.
            buf.reserve_exact(self.largest);
            buf.extend_from_slice(data);
            self.buffers.push_back(reused.clone());
            return Payload(Some(reused));
        }
        self.buffers.rotate_left(tries);
        let mut made = Vec::with_capacity(self.largest);
        made.extend_from_slice(data);
        let made = Arc::new(made);
        if self.buffers.len() < MAX_POOLED {
            self.buffers.push_back(made.clone());
        }
        Payload(Some(made))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buffers.len()
    }
}

/// A session's pools, one per media: buffers grow to the largest payload of their
/// pool, and an audio payload (a hundred bytes) is not to be kept in one sized for
/// video (over a thousand) by whatever holds it (a relay's repair buffer, a recorder).
#[derive(Debug, Default)]
pub(crate) struct PayloadPools(Vec<(Mid, PayloadPool)>);

impl PayloadPools {
    /// A payload of media `mid` holding a copy of `data`.
    pub fn copy_of(&mut self, mid: Mid, data: &[u8]) -> Payload {
        let i = match self.0.iter().position(|(m, _)| *m == mid) {
            Some(i) => i,
            None => {
                self.0.push((mid, PayloadPool::default()));
                self.0.len() - 1
            }
        };
        self.0[i].1.copy_of(data)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_released_payload_is_written_again_in_place() {
        let mut pool = PayloadPool::default();
        let first = pool.copy_of(&[1, 2, 3]);
        let kept = first.clone();
        drop(first);
        let second = pool.copy_of(&[4, 5]);
        assert!(!Payload::ptr_eq(&kept, &second), "still held: a new buffer");
        assert_eq!(pool.len(), 2);

        drop(kept);
        let third = pool.copy_of(&[6, 7, 8, 9]);
        assert_eq!(third, [6, 7, 8, 9]);
        assert_eq!(second, [4, 5]);
        assert_eq!(pool.len(), 2, "the oldest was free and was reused");
    }

    #[test]
    fn a_payload_held_long_does_not_stop_reuse_of_the_others() {
        let mut pool = PayloadPool::default();
        let held = pool.copy_of(&[0]);
        for i in 0..100u8 {
            let p = pool.copy_of(&[i]);
            assert_eq!(p, [i]);
        }
        assert_eq!(held, [0]);
        assert_eq!(pool.len(), 2, "one held, one reused");
    }

    #[test]
    fn held_oldest_buffers_keep_their_place_and_a_free_one_behind_them_is_reused() {
        let mut pool = PayloadPool::default();
        let a = pool.copy_of(&[1]);
        let b = pool.copy_of(&[2]);
        let c = pool.copy_of(&[3]);
        drop(b);
        let d = pool.copy_of(&[4]);
        assert_eq!(pool.len(), 3, "b's buffer was reused");
        let at = |i: usize| Payload(Some(pool.buffers[i].clone()));
        assert!(Payload::ptr_eq(&at(0), &a), "the held oldest stays first");
        assert!(Payload::ptr_eq(&at(1), &c));
        assert!(Payload::ptr_eq(&at(2), &d), "the reused one is the newest");
    }

    #[test]
    fn when_the_oldest_are_all_held_they_move_to_the_back() {
        let mut pool = PayloadPool::default();
        let mut held: Vec<Payload> = (0..=TRIES).map(|i| pool.copy_of(&[i as u8])).collect();
        // The one behind the window is let go: the window is all held, so a buffer is
        // made and the window moves behind it.
        drop(held.pop());
        held.push(pool.copy_of(&[100]));
        assert_eq!(pool.len(), TRIES + 2);
        // Now the free one is at the front, and reused.
        held.push(pool.copy_of(&[101]));
        assert_eq!(pool.len(), TRIES + 2, "no second new buffer");
    }

    #[test]
    fn each_media_has_its_own_buffers_and_an_empty_payload_none() {
        let mut pools = PayloadPools::default();
        let (audio, video) = (Mid::from("0"), Mid::from("1"));
        drop(pools.copy_of(video, &[7; 1200]));
        let a = pools.copy_of(audio, &[1; 100]);
        assert_eq!(a.0.as_ref().unwrap().capacity(), 100, "not sized for video");
        drop(a);
        let v = pools.copy_of(video, &[8; 10]);
        assert_eq!(v.0.as_ref().unwrap().capacity(), 1200, "the video buffer again");
        let empty = pools.copy_of(audio, &[]);
        assert!(empty.0.is_none());
        assert!(empty.is_empty());
    }
}
