//! A show's feed: RSS 2.0 with Apple's `itunes:` and Podcasting 2.0's `podcast:`
//! namespaces. Plain text in, XML out; every text goes through [`escape`], which also
//! drops the characters XML 1.0 cannot hold, so any stored text makes a well-formed
//! feed.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use crate::store::Millis;
use crate::store::podcasts::{Episode, Show};

pub const ITUNES_NS: &str = "http://www.itunes.com/dtds/podcast-1.0.dtd";
pub const PODCAST_NS: &str = "https://podcastindex.org/namespace/1.0";
pub const ATOM_NS: &str = "http://www.w3.org/2005/Atom";

/// The public addresses of a show's feed and files, under the server's public URL.
#[derive(Debug, Clone)]
pub struct FeedUrls {
    base: String,
}

impl FeedUrls {
    pub fn new(public_url: &str) -> FeedUrls {
        FeedUrls {
            base: public_url.trim_end_matches('/').to_owned(),
        }
    }
    pub fn feed(&self, show: &str) -> String {
        format!("{}/feeds/{show}.xml", self.base)
    }
    /// Versioned by the show's last change: directories and apps keep images by URL.
    pub fn artwork(&self, show: &Show) -> String {
        format!(
            "{}/feeds/{}/artwork?v={}",
            self.base, show.id, show.updated_at
        )
    }
    pub fn audio(&self, show: &str, episode: &str) -> String {
        format!("{}/feeds/{show}/{episode}/audio.opus", self.base)
    }
    pub fn chapters(&self, show: &str, episode: &str) -> String {
        format!("{}/feeds/{show}/{episode}/chapters.json", self.base)
    }
    pub fn site(&self) -> String {
        format!("{}/", self.base)
    }
}

/// Text as XML character data or an attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// An RFC 2822 date (as RFC 1123's, which podcast apps read): `Sun, 06 Dec 2026 23:03:29 GMT`.
pub fn rfc2822(ms: Millis) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// The show's `podcast:guid`: UUIDv5 of its feed URL without the scheme and trailing
/// slashes, in the namespace Podcasting 2.0 fixes, so that any directory computes the
/// same one.
pub fn podcast_guid(feed_url: &str) -> String {
    const NAMESPACE: [u8; 16] = [
        0xea, 0xd4, 0xc2, 0x36, 0xbf, 0x58, 0x58, 0xc6, 0xa2, 0xc6, 0xa6, 0xb2, 0x8d, 0x12, 0x8c,
        0xb6,
    ];
    let name = feed_url
        .split_once("://")
        .map_or(feed_url, |(_, rest)| rest)
        .trim_end_matches('/');
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&NAMESPACE);
    ctx.update(name.as_bytes());
    let digest = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).hyphenated().to_string()
}

/// The feed of `show` with `episodes` (those live now, newest first).
pub fn feed(show: &Show, episodes: &[Episode], urls: &FeedUrls, now: Millis) -> String {
    let feed_url = urls.feed(&show.id);
    let mut x = String::with_capacity(2048 + episodes.len() * 1024);
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <rss version=\"2.0\" xmlns:itunes=\"{ITUNES_NS}\" xmlns:podcast=\"{PODCAST_NS}\" xmlns:atom=\"{ATOM_NS}\">\n\
         <channel>\n\
         <title>{title}</title>\n\
         <link>{site}</link>\n\
         <description>{description}</description>\n\
         <language>{language}</language>\n\
         <atom:link href=\"{feed}\" rel=\"self\" type=\"application/rss+xml\"/>\n\
         <lastBuildDate>{built}</lastBuildDate>\n\
         <generator>StreamCore</generator>\n\
         <itunes:author>{author}</itunes:author>\n\
         <itunes:owner><itunes:name>{author}</itunes:name></itunes:owner>\n\
         <itunes:category text=\"{category}\"/>\n\
         <itunes:explicit>{explicit}</itunes:explicit>\n\
         <itunes:type>episodic</itunes:type>\n\
         <podcast:guid>{guid}</podcast:guid>\n",
        title = escape(&show.title),
        site = escape(&urls.site()),
        description = escape(&show.description),
        language = escape(&show.language),
        feed = escape(&feed_url),
        built = rfc2822(
            episodes
                .iter()
                .filter_map(|e| e.publish_at)
                .max()
                .unwrap_or(now)
                .max(show.updated_at)
        ),
        author = escape(&show.author),
        category = escape(&show.category),
        explicit = show.explicit,
        guid = podcast_guid(&feed_url),
    );
    if show.artwork_key.is_some() {
        let art = escape(&urls.artwork(show));
        let _ = write!(
            x,
            "<itunes:image href=\"{art}\"/>\n\
             <image><url>{art}</url><title>{}</title><link>{}</link></image>\n",
            escape(&show.title),
            escape(&urls.site()),
        );
    }
    for e in episodes {
        item(&mut x, show, e, urls);
    }
    x.push_str("</channel>\n</rss>\n");
    x
}

fn item(x: &mut String, show: &Show, e: &Episode, urls: &FeedUrls) {
    let _ = write!(
        x,
        "<item>\n\
         <title>{title}</title>\n\
         <description>{description}</description>\n\
         <enclosure url=\"{url}\" length=\"{bytes}\" type=\"{mime}\"/>\n\
         <guid isPermaLink=\"false\">{guid}</guid>\n\
         <pubDate>{date}</pubDate>\n\
         <itunes:duration>{secs}</itunes:duration>\n\
         <itunes:explicit>{explicit}</itunes:explicit>\n",
        title = escape(&e.title),
        description = escape(&e.description),
        url = escape(&urls.audio(&show.id, &e.id)),
        bytes = e.audio_bytes,
        mime = escape(&e.audio_type),
        guid = escape(&e.guid),
        date = rfc2822(e.publish_at.unwrap_or(e.created_at)),
        secs = (e.duration_ms + 500) / 1000,
        explicit = show.explicit,
    );
    if let Some(season) = e.season {
        let _ = writeln!(
            x,
            "<itunes:season>{season}</itunes:season>\n<podcast:season>{season}</podcast:season>"
        );
    }
    if let Some(n) = e.episode {
        let _ = writeln!(
            x,
            "<itunes:episode>{n}</itunes:episode>\n<podcast:episode>{n}</podcast:episode>"
        );
    }
    if !e.chapter_list().is_empty() {
        let _ = writeln!(
            x,
            "<podcast:chapters url=\"{}\" type=\"application/json+chapters\"/>",
            escape(&urls.chapters(&show.id, &e.id))
        );
    }
    x.push_str("</item>\n");
}

/// An episode's chapters as Podcasting 2.0's JSON chapters (version 1.2.0).
pub fn chapters_json(e: &Episode) -> serde_json::Value {
    let chapters: Vec<serde_json::Value> = e
        .chapter_list()
        .iter()
        .map(|c| serde_json::json!({ "startTime": c.start_ms as f64 / 1000.0, "title": c.title }))
        .collect();
    serde_json::json!({ "version": "1.2.0", "chapters": chapters })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show() -> Show {
        Show {
            id: "s1".into(),
            owner_id: "u".into(),
            title: "Tom & Jerry's <Show>".into(),
            description: "Talk\u{1}\u{FFFE} about \"things\"".into(),
            author: "Tom".into(),
            language: "en".into(),
            category: "Society & Culture".into(),
            explicit: false,
            artwork_key: Some("k".into()),
            artwork_type: Some("image/png".into()),
            created_at: 0,
            updated_at: 1_000,
            episodes: 1,
        }
    }

    fn episode(chapters: &str) -> Episode {
        Episode {
            id: "e1".into(),
            show_id: "s1".into(),
            guid: "g-1".into(),
            title: "One".into(),
            description: "notes".into(),
            status: "published".into(),
            publish_at: Some(1_796_598_209_000),
            season: Some(2),
            episode: Some(7),
            source_job: "j".into(),
            audio_key: "a".into(),
            audio_bytes: 12_345,
            audio_type: "audio/ogg".into(),
            duration_ms: 61_600,
            chapters: chapters.into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn text_is_escaped_and_control_characters_dropped() {
        assert_eq!(
            escape("a&b<c>\"d'\u{1}e\tf"),
            "a&amp;b&lt;c&gt;&quot;d&apos;e\tf"
        );
        let x = feed(&show(), &[], &FeedUrls::new("https://x.test/"), 5_000);
        assert!(
            x.contains("<title>Tom &amp; Jerry&apos;s &lt;Show&gt;</title>"),
            "{x}"
        );
        assert!(
            x.contains("<description>Talk about &quot;things&quot;</description>"),
            "{x}"
        );
        assert!(
            x.contains("<itunes:category text=\"Society &amp; Culture\"/>"),
            "{x}"
        );
    }

    #[test]
    fn an_item_carries_its_enclosure_guid_numbers_and_chapters() {
        let urls = FeedUrls::new("https://x.test");
        let x = feed(
            &show(),
            &[episode(
                r#"[{"start_ms":0,"title":"Intro"},{"start_ms":30500,"title":"Talk"}]"#,
            )],
            &urls,
            5_000,
        );
        for want in [
            "<enclosure url=\"https://x.test/feeds/s1/e1/audio.opus\" length=\"12345\" type=\"audio/ogg\"/>",
            "<guid isPermaLink=\"false\">g-1</guid>",
            "<pubDate>Sun, 06 Dec 2026 23:03:29 GMT</pubDate>",
            "<itunes:duration>62</itunes:duration>",
            "<itunes:season>2</itunes:season>",
            "<podcast:episode>7</podcast:episode>",
            "<podcast:chapters url=\"https://x.test/feeds/s1/e1/chapters.json\" type=\"application/json+chapters\"/>",
            "<itunes:image href=\"https://x.test/feeds/s1/artwork?v=1000\"/>",
            "<atom:link href=\"https://x.test/feeds/s1.xml\" rel=\"self\"",
        ] {
            assert!(x.contains(want), "missing {want} in\n{x}");
        }
        let none = feed(&show(), &[episode("[]")], &urls, 5_000);
        assert!(!none.contains("podcast:chapters"), "{none}");
        assert_eq!(
            chapters_json(&episode(r#"[{"start_ms":30500,"title":"Talk"}]"#)),
            serde_json::json!({"version": "1.2.0", "chapters": [{"startTime": 30.5, "title": "Talk"}]})
        );
    }

    #[test]
    fn the_show_guid_is_podcasting_2_0s_uuid_v5_of_the_feed_url() {
        // The example of the podcast namespace's documentation.
        assert_eq!(
            podcast_guid("https://mp3s.nashownotes.com/pc20rss.xml"),
            "917393e3-1b1e-5cef-ace4-edaa54e1f810"
        );
        assert_eq!(
            podcast_guid("mp3s.nashownotes.com/pc20rss.xml/"),
            "917393e3-1b1e-5cef-ace4-edaa54e1f810"
        );
    }
}
