//! Many UDP datagrams in one system call (`sendmmsg(2)`).
//!
//! One publisher packet fans out to N subscribers, each copy to another address, so
//! UDP GSO (one destination per call) does not apply; `sendmmsg` does: the kernel
//! crossing is paid once per batch of up to [`BATCH`] datagrams instead of once per
//! datagram.
//!
//! Invariants: nothing is allocated per call (the message headers, I/O vectors and
//! addresses live on the stack, and only as many are written as are sent); the pointers into the caller's datagrams exist only
//! for the duration of the call. `unsafe` here: the system call and the C structs it
//! reads, which std, tokio and socket2 do not wrap.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams per system call (Linux's UIO_MAXIOV is far above; 64 keeps the stack
/// frame at some 13 kB).
pub const BATCH: usize = 64;

/// One datagram to send.
pub trait Datagram {
    fn destination(&self) -> SocketAddr;
    fn payload(&self) -> &[u8];
}

impl Datagram for str0m::net::Transmit {
    fn destination(&self) -> SocketAddr {
        self.destination
    }

    fn payload(&self) -> &[u8] {
        &self.contents
    }
}

impl Datagram for (SocketAddr, &[u8]) {
    fn destination(&self) -> SocketAddr {
        self.0
    }

    fn payload(&self) -> &[u8] {
        self.1
    }
}

/// Sends the first `min(BATCH, datagrams.len())` datagrams on the non-blocking
/// socket `fd` in one call. Returns how many the kernel took (at least one), or the
/// error of the first one (`WouldBlock` when the socket buffer is full); the caller
/// skips a datagram whose error is not `WouldBlock` and calls again with the rest.
pub fn send_batch<D: Datagram>(fd: RawFd, datagrams: &[D]) -> io::Result<usize> {
    let n = datagrams.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    // Only the first `n` entries are written: a batch of one (a paced release) must
    // not pay for clearing all 64 (some 13 kB).
    let mut addrs = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; BATCH];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; BATCH];
    for (i, d) in datagrams[..n].iter().enumerate() {
        let payload = d.payload();
        let iov = iovs[i].write(libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        });
        let name = addrs[i].as_mut_ptr();
        let namelen = write_sockaddr(name, d.destination());
        // SAFETY: all-zero is a valid msghdr (its private padding included).
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_name = name.cast();
        h.msg_namelen = namelen;
        h.msg_iov = iov;
        h.msg_iovlen = 1;
        hdrs[i].write(libc::mmsghdr {
            msg_hdr: h,
            msg_len: 0,
        });
    }
    // SAFETY: `hdrs[..n]` are initialised and point into `addrs`, `iovs` (initialised
    // as far as `msg_namelen` and `msg_iovlen` say) and the caller's payloads, all of
    // which outlive the call; the kernel reads them and writes only `msg_len`.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr().cast(), n as libc::c_uint, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Writes `addr` as a C socket address at `out` (which may be uninitialised); returns
/// its length.
fn write_sockaddr(out: *mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe {
                std::ptr::write(out.cast(), sin);
            }
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe {
                std::ptr::write(out.cast(), sin6);
            }
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_batch_reaches_every_destination_in_order() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let v6 = UdpSocket::bind("[::1]:0").ok();
        let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 10 + i as usize]).collect();
        let dgrams: Vec<(SocketAddr, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (rx[i % 3].local_addr().unwrap(), p.as_slice()))
            .collect();
        let mut at = 0;
        while at < dgrams.len() {
            let n = send_batch(tx.as_raw_fd(), &dgrams[at..]).unwrap();
            assert!((1..=BATCH).contains(&n));
            at += n;
        }
        let mut buf = [0u8; 256];
        for (i, p) in payloads.iter().enumerate() {
            let r = &rx[i % 3];
            r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (len, from) = r.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], p.as_slice(), "datagram {i}");
            assert_eq!(from, tx.local_addr().unwrap());
        }
        // IPv6, where the machine has it.
        if let (Some(v6), Ok(tx6)) = (v6, UdpSocket::bind("[::1]:0")) {
            let d = [(v6.local_addr().unwrap(), &b"six"[..])];
            assert_eq!(send_batch(tx6.as_raw_fd(), &d).unwrap(), 1);
            v6.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (len, _) = v6.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], b"six");
        }
    }

    #[test]
    fn the_first_datagrams_error_is_reported() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // An IPv6 destination on an IPv4 socket fails at once.
        let d = [("[::1]:9".parse().unwrap(), &b"x"[..])];
        assert!(send_batch(tx.as_raw_fd(), &d).is_err());
        let none: [(SocketAddr, &[u8]); 0] = [];
        assert_eq!(send_batch(tx.as_raw_fd(), &none).unwrap(), 0);
    }
}
