//! A small SVG line plot for the benchmark reports: log-scaled x (subscriber counts
//! span 1…1000) and y (a cost per packet spans 2…200 µs between N = 1 and N = 1000),
//! one polyline per series, a legend. Plain text
//! out, so a report can commit its figure beside its table.

use std::fmt::Write;

/// One line of the plot.
pub struct Series {
    pub label: String,
    /// An SVG colour.
    pub colour: &'static str,
    /// Dashed, for reference lines such as a floor.
    pub dashed: bool,
    /// (x, y) with x, y > 0; drawn in x order.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The 1, 2, 5 × 10^k values from 10^lo to 10^hi.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut v = Vec::new();
    let mut e = lo;
    while e <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = m * 10f64.powf(e);
            if t <= 10f64.powf(hi) * 1.0001 {
                v.push(t);
            }
        }
        e += 1.0;
    }
    v
}

/// A tick label without trailing zeros.
fn label(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Whole decades around the positive values of `it` (0..1 when there are none).
fn decades(it: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0f64);
    for v in it.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let (a, b) = (lo.log10().floor(), hi.log10().ceil());
    (a, if b > a { b } else { a + 1.0 })
}

/// The plot as an SVG document.
pub fn line_plot(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|(x, y)| *x > 0.0 && *y > 0.0 && y.is_finite())
    };
    let (lx0, lx1) = decades(pts().map(|p| p.0));
    let (ly0, ly1) = decades(pts().map(|p| p.1));
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x.log10() - lx0) / (lx1 - lx0) * pw;
    let sy = |y: f64| TOP + ph - (y.log10() - ly0) / (ly1 - ly0) * ph;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    // Axes and grid.
    for y in ticks(ly0, ly1) {
        let py = sy(y);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            py + 4.0,
            label(y)
        );
    }
    for x in ticks(lx0, lx1) {
        let px = sx(x);
        let _ = writeln!(
            o,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            label(x)
        );
    }
    let _ = writeln!(
        o,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        H - 12.0,
        escape(x_label)
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        escape(y_label)
    );
    // Lines and legend.
    for (i, s) in series.iter().enumerate() {
        let mut p: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0 && y.is_finite())
            .collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let coords: Vec<String> = p
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            o,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            coords.join(" "),
            s.colour
        );
        for (x, y) in &p {
            let _ = writeln!(
                o,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                sx(*x),
                sy(*y),
                s.colour
            );
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            s.colour,
            lx + 30.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_every_point_inside_the_frame() {
        let svg = line_plot(
            "t <1>",
            "N",
            "µs",
            &[Series {
                label: "a & b".into(),
                colour: "red",
                dashed: true,
                points: vec![(1000.0, 40.0), (1.0, 2.0), (100.0, f64::NAN)],
            }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("a &amp; b"));
        assert_eq!(svg.matches("<circle").count(), 2, "NaN is left out");
        for c in svg.split("<circle cx=\"").skip(1) {
            let mut f = c.split('"');
            let cx: f64 = f.next().unwrap().parse().unwrap();
            let cy: f64 = f.nth(1).unwrap().parse().unwrap();
            assert!((LEFT..=W - RIGHT).contains(&cx), "{cx}");
            assert!((TOP..=H - BOTTOM).contains(&cy), "{cy}");
        }
        // (1, 2) and (1000, 40): x over decades 0..3, y over 0..2.
        assert_eq!(decades([1.0, 1000.0].into_iter()), (0.0, 3.0));
        assert_eq!(decades([2.0, 40.0].into_iter()), (0.0, 2.0));
        assert_eq!(ticks(0.0, 1.0), vec![1.0, 2.0, 5.0, 10.0]);
    }
}
