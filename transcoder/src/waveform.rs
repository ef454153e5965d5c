//! Waveform previews: the peaks of a fixed number of buckets, and an SVG of them.

use serde::Serialize;

/// `buckets` pairs of (min, max) of the channels' mix, in −1..1, over equal spans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Peaks {
    pub buckets: usize,
    pub duration_ms: f64,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

pub fn peaks(samples: &[f32], channels: usize, rate: u32, buckets: usize) -> Peaks {
    let channels = channels.max(1);
    let frames = samples.len() / channels;
    let buckets = buckets.max(1);
    let (mut min, mut max) = (vec![0f32; buckets], vec![0f32; buckets]);
    for b in 0..buckets {
        let (start, end) = (frames * b / buckets, frames * (b + 1) / buckets);
        let (mut lo, mut hi) = (0f32, 0f32);
        for f in start..end {
            let frame = &samples[f * channels..(f + 1) * channels];
            let v = frame.iter().sum::<f32>() / channels as f32;
            lo = lo.min(v);
            hi = hi.max(v);
        }
        min[b] = lo.clamp(-1.0, 1.0);
        max[b] = hi.clamp(-1.0, 1.0);
    }
    Peaks {
        buckets,
        duration_ms: frames as f64 * 1000.0 / f64::from(rate.max(1)),
        min,
        max,
    }
}

/// An SVG of the peaks, `width` × `height`, one vertical bar per bucket.
pub fn svg(p: &Peaks, width: u32, height: u32) -> String {
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(2)));
    let step = w / p.buckets as f64;
    let mid = h / 2.0;
    let mut d = String::with_capacity(p.buckets * 24);
    for (i, (lo, hi)) in p.min.iter().zip(&p.max).enumerate() {
        let x = (i as f64 + 0.5) * step;
        let top = mid - f64::from(*hi) * mid;
        // At least a hairline, so silence still draws a line.
        let bottom = (mid - f64::from(*lo) * mid).max(top + 0.5);
        d.push_str(&format!("M{x:.2} {top:.2}V{bottom:.2}"));
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\"><path d=\"{d}\" stroke=\"currentColor\" stroke-width=\"{:.2}\" fill=\"none\"/></svg>",
        (step * 0.8).max(0.5)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_the_extremes_of_their_span() {
        let mut s = vec![0f32; 1000];
        s[150] = 0.9;
        s[820] = -0.5;
        let p = peaks(&s, 1, 1000, 10);
        assert_eq!(p.buckets, 10);
        assert_eq!(p.max[1], 0.9);
        assert_eq!(p.min[8], -0.5);
        assert_eq!(p.max[5], 0.0);
        assert_eq!(p.duration_ms, 1000.0);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["max"].as_array().unwrap().len(), 10);
        let svg = svg(&p, 200, 40);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches('M').count(), 10);
    }

    #[test]
    fn stereo_is_mixed_and_out_of_range_is_clamped() {
        let s = [1.0f32, 1.0, 2.0, 2.0, -1.0, 1.0];
        let p = peaks(&s, 2, 3, 1);
        assert_eq!((p.min[0], p.max[0]), (0.0, 1.0));
    }
}
