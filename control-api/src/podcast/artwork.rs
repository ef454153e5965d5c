//! Show artwork: what podcast directories accept is a square JPEG or PNG of 1400 to
//! 3000 pixels a side. The size is read from the file's header (PNG's `IHDR`, JPEG's
//! start-of-frame segment); nothing is decoded.

/// An accepted image's type and side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artwork {
    pub mime: &'static str,
    pub side: u32,
}

pub const MIN_SIDE: u32 = 1400;
pub const MAX_SIDE: u32 = 3000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtworkError {
    #[error("The artwork must be a JPEG or PNG image.")]
    NotAnImage,
    #[error("The image's size could not be read; it may be damaged.")]
    Unreadable,
    #[error(
        "The artwork is {width} × {height} px; podcast apps need a square image of {MIN_SIDE} to {MAX_SIDE} px."
    )]
    WrongSize { width: u32, height: u32 },
}

/// Checks an uploaded artwork file.
pub fn check(bytes: &[u8]) -> Result<Artwork, ArtworkError> {
    let (mime, width, height) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let (w, h) = png_size(bytes).ok_or(ArtworkError::Unreadable)?;
        ("image/png", w, h)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let (w, h) = jpeg_size(bytes).ok_or(ArtworkError::Unreadable)?;
        ("image/jpeg", w, h)
    } else {
        return Err(ArtworkError::NotAnImage);
    };
    if width != height || !(MIN_SIDE..=MAX_SIDE).contains(&width) {
        return Err(ArtworkError::WrongSize { width, height });
    }
    Ok(Artwork { mime, side: width })
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

/// The first chunk of a PNG is its `IHDR`: width and height, big-endian.
fn png_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.get(12..16)? != b"IHDR" {
        return None;
    }
    Some((be32(b, 16)?, be32(b, 20)?))
}

/// Walks the JPEG's segments to its start of frame (any SOFn but the DHT, JPG and DAC
/// markers that share the range).
fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    loop {
        // Markers may be preceded by fill bytes.
        while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *b.get(i)? != 0xFF {
            return None;
        }
        let marker = *b.get(i + 1)?;
        match marker {
            0xD0..=0xD7 | 0x01 => i += 2,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                // length(2) precision(1) height(2) width(2)
                return Some((be16(b, i + 7)?, be16(b, i + 5)?));
            }
            0xD9 | 0xDA => return None,
            _ => i += 2 + be16(b, i + 2)? as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0]);
        b
    }

    fn jpeg(w: u16, h: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        // APP0 (JFIF), a DHT (0xC4, not a frame), fill bytes, then SOF2.
        b.extend_from_slice(&[0xFF, 0xE0, 0, 16]);
        b.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        b.extend_from_slice(&[0xFF, 0xC4, 0, 4, 0, 0]);
        b.extend_from_slice(&[0xFF, 0xFF, 0xC2, 0, 17, 8]);
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&[3; 10]);
        b
    }

    #[test]
    fn square_images_in_range_pass() {
        assert_eq!(
            check(&png(1400, 1400)),
            Ok(Artwork {
                mime: "image/png",
                side: 1400
            })
        );
        assert_eq!(
            check(&jpeg(3000, 3000)),
            Ok(Artwork {
                mime: "image/jpeg",
                side: 3000
            })
        );
    }

    #[test]
    fn wrong_sizes_say_the_size() {
        let e = check(&png(1400, 1401)).unwrap_err();
        assert_eq!(
            e,
            ArtworkError::WrongSize {
                width: 1400,
                height: 1401
            }
        );
        assert!(e.to_string().contains("1400 × 1401 px"), "{e}");
        assert!(matches!(
            check(&jpeg(1399, 1399)),
            Err(ArtworkError::WrongSize { width: 1399, .. })
        ));
        assert!(matches!(
            check(&jpeg(3001, 3001)),
            Err(ArtworkError::WrongSize { .. })
        ));
    }

    #[test]
    fn other_files_and_cut_headers_are_refused() {
        assert_eq!(check(b"GIF89a...."), Err(ArtworkError::NotAnImage));
        assert_eq!(check(b""), Err(ArtworkError::NotAnImage));
        assert_eq!(check(&png(1400, 1400)[..18]), Err(ArtworkError::Unreadable));
        assert_eq!(
            check(&jpeg(1400, 1400)[..30]),
            Err(ArtworkError::Unreadable)
        );
        // A JPEG whose scan starts before any frame header.
        assert_eq!(
            check(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]),
            Err(ArtworkError::Unreadable)
        );
    }
}
