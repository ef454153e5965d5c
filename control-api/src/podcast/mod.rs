//! # Podcasts: shows, episodes and their public feeds
//!
//! A user's show (its title, author, language, category, artwork) holds episodes made
//! from one of their finished uploads or recording mixdowns. An episode is a draft
//! until published, now or at a time ahead (scheduled); its feed shows it once that
//! time has passed. The routes are in `routes::podcasts` (the owner's API) and
//! `routes::feeds` (public: the RSS feed, artwork, audio and chapters).
//!
//! Invariants:
//! - an episode's audio is its own object under its show's prefix
//!   (`podcasts/<owner>/<show>/<episode>/`), copied when it is made: deleting the
//!   upload or recording it came from leaves it playable, and deleting the episode or
//!   show removes its objects;
//! - an episode's `guid` is made once and never changes across edits;
//! - the enclosure's `length` is the stored object's size, read back from the store.

pub mod artwork;
pub mod rss;

use signaling::ApiError;

use crate::store::podcasts::{Chapter, Marker};

/// Apple Podcasts' top-level categories: what `itunes:category` takes.
pub const CATEGORIES: &[&str] = &[
    "Arts",
    "Business",
    "Comedy",
    "Education",
    "Fiction",
    "Government",
    "Health & Fitness",
    "History",
    "Kids & Family",
    "Leisure",
    "Music",
    "News",
    "Religion & Spirituality",
    "Science",
    "Society & Culture",
    "Sports",
    "Technology",
    "True Crime",
    "TV & Film",
];

pub const MAX_TITLE: usize = 200;
/// Apple's limit for a description.
pub const MAX_DESCRIPTION: usize = 4000;
pub const MAX_CHAPTERS: usize = 500;

/// A trimmed text of `1..=max` characters (or `0..=max` when it may be empty).
pub fn text(
    field: &'static str,
    value: &str,
    max: usize,
    empty_ok: bool,
) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() && !empty_ok {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    {
        return Err(ApiError::invalid_field(
            field,
            "must not hold control characters",
        ));
    }
    Ok(v.to_owned())
}

/// A language tag as RSS takes it: `en`, `pt-BR`, `zh-Hant-TW`.
pub fn language(value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    let mut parts = v.split('-');
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    if !primary_ok
        || !parts
            .all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(ApiError::invalid_field(
            "language",
            "must be a language tag such as en or pt-BR",
        ));
    }
    Ok(v.to_owned())
}

pub fn category(value: &str) -> Result<String, ApiError> {
    CATEGORIES
        .iter()
        .find(|c| **c == value.trim())
        .map(|c| (*c).to_owned())
        .ok_or_else(|| {
            ApiError::invalid_field(
                "category",
                format!("must be one of: {}", CATEGORIES.join(", ")),
            )
        })
}

/// A season or episode number.
pub fn number(field: &'static str, value: Option<i64>) -> Result<Option<i64>, ApiError> {
    match value {
        Some(n) if !(1..=1_000_000).contains(&n) => Err(ApiError::invalid_field(
            field,
            "must be a whole number from 1",
        )),
        v => Ok(v),
    }
}

/// Chapters of an episode `duration_ms` long, sorted; each starts within the episode,
/// no two at the same time.
pub fn chapters(mut list: Vec<Chapter>, duration_ms: i64) -> Result<Vec<Chapter>, ApiError> {
    if list.len() > MAX_CHAPTERS {
        return Err(ApiError::invalid_field(
            "chapters",
            format!("an episode has at most {MAX_CHAPTERS} chapters"),
        ));
    }
    for c in &mut list {
        c.title = text("chapters", &c.title, MAX_TITLE, false).map_err(|_| {
            ApiError::invalid_field(
                "chapters",
                format!("every chapter needs a title of at most {MAX_TITLE} characters"),
            )
        })?;
        if c.start_ms < 0 || c.start_ms >= duration_ms.max(1) {
            return Err(ApiError::invalid_field(
                "chapters",
                format!(
                    "the chapter \"{}\" starts at {}, outside the episode ({})",
                    c.title,
                    clock(c.start_ms),
                    clock(duration_ms)
                ),
            ));
        }
    }
    list.sort_by_key(|c| c.start_ms);
    if let Some(w) = list.windows(2).find(|w| w[0].start_ms == w[1].start_ms) {
        return Err(ApiError::invalid_field(
            "chapters",
            format!("two chapters start at {}", clock(w[0].start_ms)),
        ));
    }
    Ok(list)
}

/// `m:ss` or `h:mm:ss`.
pub fn clock(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The chapters a recording's markers make in a mixdown that starts at `starts_at_ms`
/// (wall clock) and lasts `duration_ms`: a marker set before the first sound starts the
/// episode; one set after its end is dropped; of two at the same time the first stays.
pub fn chapters_from_markers(
    markers: &[Marker],
    starts_at_ms: f64,
    duration_ms: i64,
) -> Vec<Chapter> {
    let mut out: Vec<Chapter> = Vec::new();
    for m in markers {
        let start = ((m.at_ms as f64 - starts_at_ms).max(0.0)) as i64;
        if start >= duration_ms || out.iter().any(|c| c.start_ms == start) {
            continue;
        }
        out.push(Chapter {
            start_ms: start,
            title: m.title.clone(),
        });
    }
    out.sort_by_key(|c| c.start_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(start_ms: i64, title: &str) -> Chapter {
        Chapter {
            start_ms,
            title: title.into(),
        }
    }

    fn marker(at_ms: i64, title: &str) -> Marker {
        Marker {
            id: title.into(),
            recording_id: "r".into(),
            at_ms,
            title: title.into(),
            created_by: "u".into(),
            created_at: at_ms,
        }
    }

    #[test]
    fn chapters_are_sorted_and_kept_inside_the_episode() {
        let got = chapters(vec![ch(30_000, " Talk "), ch(0, "Intro")], 60_000).unwrap();
        assert_eq!(got, vec![ch(0, "Intro"), ch(30_000, "Talk")]);
        let past = chapters(vec![ch(60_000, "After")], 60_000).unwrap_err();
        assert!(past.to_string().contains("1:00"), "{past}");
        assert!(chapters(vec![ch(-1, "Before")], 60_000).is_err());
        assert!(chapters(vec![ch(5, "A"), ch(5, "B")], 60_000).is_err());
        assert!(chapters(vec![ch(5, "  ")], 60_000).is_err());
        assert!(chapters(vec![ch(0, "x"); MAX_CHAPTERS + 1], 60_000).is_err());
    }

    #[test]
    fn markers_become_chapters_from_the_mixdowns_start() {
        let got = chapters_from_markers(
            &[
                marker(900, "Before the first sound"),
                marker(1_000, "Same time"),
                marker(31_000, "Talk"),
                marker(99_000, "After the end"),
            ],
            1_000.0,
            60_000,
        );
        assert_eq!(
            got,
            vec![ch(0, "Before the first sound"), ch(30_000, "Talk")]
        );
    }

    #[test]
    fn fields_are_checked() {
        assert_eq!(language("pt-BR").unwrap(), "pt-BR");
        assert!(language("english").is_err());
        assert!(language("en-").is_err());
        assert_eq!(category("Music").unwrap(), "Music");
        assert!(category("Musik").is_err());
        assert!(number("season", Some(0)).is_err());
        assert_eq!(number("season", None).unwrap(), None);
        assert!(text("title", "  ", 10, false).is_err());
        assert!(text("title", "a\u{7}b", 10, false).is_err());
        assert_eq!(text("title", " ok ", 10, false).unwrap(), "ok");
        assert_eq!(clock(3_723_000), "1:02:03");
        assert_eq!(clock(61_000), "1:01");
    }
}
