//! Test support shared by the recorder's tests and the node's end-to-end recording
//! tests: the project's Python virtualenv (FFmpeg's encoders and decoders via PyAV,
//! moto's S3 server), each installed by `scripts/ensure-venv.sh`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|p| p.join("scripts/ensure-venv.sh").exists())
        .expect("the repository root")
        .to_owned()
}

/// The venv's python (installed or reused by `scripts/ensure-venv.sh`).
pub fn python() -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/ensure-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/ensure-venv.sh");
    assert!(out.status.success(), "scripts/ensure-venv.sh failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("the venv's python")
        .trim()
        .to_owned()
}

/// One encoded frame (video) or packet (Opus).
#[derive(Debug, Clone)]
pub struct Encoded {
    pub key: bool,
    /// 90 kHz for video, 48 kHz for audio.
    pub pts: u32,
    pub data: Vec<u8>,
}

/// Real media from FFmpeg's encoders: `codec` is vp8, vp9, h264, av1 or opus.
pub fn encode(py: &str, codec: &str, n: usize) -> Vec<Encoded> {
    let out = std::env::temp_dir().join(format!(
        "sc-media-{}-{codec}-{n}-{}",
        std::process::id(),
        rand_u64()
    ));
    let st = Command::new(py)
        .arg(repo().join("scripts/interop/make_media.py"))
        .args([codec, &n.to_string()])
        .arg(&out)
        .status()
        .expect("running make_media.py");
    assert!(st.success(), "make_media.py {codec} failed");
    let data = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let mut v = Vec::new();
    let mut i = 0;
    while i + 9 <= data.len() {
        let key = data[i] != 0;
        let pts = u32::from_be_bytes(data[i + 1..i + 5].try_into().unwrap());
        let len = u32::from_be_bytes(data[i + 5..i + 9].try_into().unwrap()) as usize;
        v.push(Encoded {
            key,
            pts,
            data: data[i + 9..i + 9 + len].to_vec(),
        });
        i += 9 + len;
    }
    // Timestamps from 0 (Opus starts before it, by its pre-skip).
    if let Some(first) = v.first().map(|e| e.pts) {
        for e in &mut v {
            e.pts = e.pts.wrapping_sub(first);
        }
    }
    v
}

/// What FFmpeg decodes from a file: one JSON object per stream (type, codec, frames,
/// width, height, samples, first_pts, last_end). Panics if it does not decode.
pub fn decode(py: &str, path: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(py)
        .arg(repo().join("scripts/interop/decode_media.py"))
        .arg(path)
        .output()
        .expect("running decode_media.py");
    assert!(
        out.status.success(),
        "FFmpeg could not decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["streams"].as_array().unwrap().clone()
}

/// An audio fixture from FFmpeg's encoders (`scripts/interop/make_audio.py`): `kind`
/// sweep/speech/silence/clipped, `container` wav/flac/mp3/m4a/ogg/webm, stereo.
pub fn make_audio(py: &str, kind: &str, container: &str, rate: u32, secs: f64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sc-audio-{}-{kind}.{container}", rand_u64()));
    let st = Command::new(py)
        .arg(repo().join("scripts/interop/make_audio.py"))
        .args([kind, container, &rate.to_string(), &secs.to_string()])
        .arg(&path)
        .status()
        .expect("running make_audio.py");
    assert!(st.success(), "make_audio.py {kind} {container} failed");
    path
}

/// FFmpeg's EBU R128 meter on a file (`scripts/interop/loudness.py`): (LUFS, dBTP).
pub fn ffmpeg_loudness(py: &str, path: &Path) -> (f64, f64) {
    let out = Command::new(py)
        .arg(repo().join("scripts/interop/loudness.py"))
        .arg(path)
        .output()
        .expect("running loudness.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1])
}

/// Where sound starts in each file and how long it is, as FFmpeg decodes it
/// (`scripts/interop/onsets.py`): `(onset ms, duration ms)` per file.
pub fn onsets(py: &str, level: f64, paths: &[&Path]) -> Vec<(f64, f64)> {
    let out = Command::new(py)
        .arg(repo().join("scripts/interop/onsets.py"))
        .arg(level.to_string())
        .args(paths)
        .output()
        .expect("running onsets.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<f64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0], v[1])
        })
        .collect()
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's S3 server on a loopback port. It keeps objects in memory: a restart
/// starts empty (the tests create the bucket again, as a real store would still
/// have it).
pub struct Moto {
    py: String,
    pub port: u16,
    child: Option<Child>,
}

pub const BUCKET: &str = "recordings";

impl Moto {
    pub fn start(py: &str) -> Moto {
        let mut m = Moto {
            py: py.to_owned(),
            port: free_port(),
            child: None,
        };
        m.spawn();
        m
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.py)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto's server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.request("PUT", &format!("/{BUCKET}")).is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (the port refuses connections until `restart`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, with the bucket.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// One plain HTTP request; the status code, if the server answered.
    pub fn request(&self, method: &str, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        buf.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn store_config(&self) -> recorder::StoreConfig {
        recorder::StoreConfig::S3 {
            bucket: BUCKET.into(),
            endpoint: self.endpoint(),
            region: "us-east-1".into(),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
