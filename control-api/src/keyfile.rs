//! Secret keys kept as files in the keys directory (32 random bytes, mode 0600): made
//! on first use, read by every node that shares the directory. A file appears whole or
//! not at all, so nodes starting together agree on one key.

use std::io;
use std::path::Path;

/// The key in `path`, made when missing; shorter than 32 bytes is an error.
pub fn load_or_create(path: &Path) -> io::Result<Vec<u8>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path)?,
        Err(e) => return Err(e),
    };
    if bytes.len() < 32 {
        return Err(io::Error::other(format!(
            "{} holds {} bytes, not a 32-byte key",
            path.display(),
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Writes a new key beside `path`, then links it into place: the file appears whole or
/// not at all, so a node starting at the same time never reads half a key. When
/// another node's key got there first, that key is the one.
fn create(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Write as _;
    let key: [u8; 32] = rand::random();
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".key-{}.tmp",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key.to_vec()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}
