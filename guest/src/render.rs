//! Markdown to sanitized HTML, event size estimates, and clean split points.
//!
//! Sanitizing is by construction: raw HTML in the source is shown as text,
//! links keep only safe schemes, and images that are not `mxc://` become
//! links. What remains are the tags pulldown-cmark writes itself, all of
//! which are in the Matrix spec's allowed list.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};

/// Schemes a link may use (the Matrix spec's list for `a href`, plus
/// `matrix:` and `mxc:`).
const SAFE_SCHEMES: &[&str] = &["http", "https", "ftp", "mailto", "magnet", "matrix", "mxc"];

/// Bytes an edit event needs besides its texts (relations, mentions, the
/// event envelope), kept generous.
pub const EDIT_OVERHEAD: usize = 2048;

/// Render Markdown to sanitized HTML; `None` when the text has no
/// formatting (plain `body` says it all).
pub fn to_html(markdown: &str) -> Option<String> {
    let html = render(markdown);
    let plain = html
        .strip_prefix("<p>")
        .and_then(|h| h.strip_suffix("</p>\n"))
        .is_some_and(|inner| !inner.contains('<'));
    if plain || html.is_empty() {
        None
    } else {
        Some(html)
    }
}

fn render(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    );
    let mut dropped_link = false;
    let mut image_as_link = false;
    let events = parser.filter_map(|event| match event {
        Event::Html(s) | Event::InlineHtml(s) => Some(Event::Text(s)),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            if safe_url(&dest_url) {
                Some(Event::Start(Tag::Link {
                    link_type,
                    dest_url,
                    title,
                    id,
                }))
            } else {
                dropped_link = true;
                None
            }
        }
        Event::End(TagEnd::Link) if dropped_link => {
            dropped_link = false;
            None
        }
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            if dest_url.starts_with("mxc://") {
                Some(Event::Start(Tag::Image {
                    link_type,
                    dest_url,
                    title,
                    id,
                }))
            } else if safe_url(&dest_url) {
                // Matrix clients only load mxc:// images: link to it instead.
                image_as_link = true;
                Some(Event::Start(Tag::Link {
                    link_type,
                    dest_url,
                    title,
                    id,
                }))
            } else {
                image_as_link = true;
                dropped_link = true;
                None
            }
        }
        Event::End(TagEnd::Image) if image_as_link => {
            image_as_link = false;
            if dropped_link {
                dropped_link = false;
                None
            } else {
                Some(Event::End(TagEnd::Link))
            }
        }
        other => Some(other),
    });
    let mut out = String::with_capacity(markdown.len() + markdown.len() / 4);
    html::push_html(&mut out, events);
    out
}

/// A URL without a scheme is relative (harmless); one with a scheme must use
/// a safe one. Browsers drop whitespace and control characters inside a
/// scheme, so we do too before looking at it.
fn safe_url(url: &str) -> bool {
    if crate::planted::on(crate::planted::Bug::UnsafeLinks) {
        return true;
    }
    let cleaned: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .collect();
    match cleaned.find([':', '/', '?', '#']) {
        Some(i) if cleaned.as_bytes()[i] == b':' => {
            let scheme = cleaned[..i].to_ascii_lowercase();
            SAFE_SCHEMES.contains(&scheme.as_str())
        }
        _ => true,
    }
}

/// Length of `s` once written as a JSON string (without the quotes).
pub fn json_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Upper estimate of an edit event carrying this text: an edit holds body
/// and formatted body twice (fallback and `m.new_content`).
pub fn edit_size(body: &str, html: Option<&str>) -> usize {
    2 * (json_len(body) + 2 + html.map_or(0, |h| json_len(h) + 2)) + EDIT_OVERHEAD
}

/// Whether `text` fits in one edit event of at most `budget` bytes.
pub fn fits(text: &str, fence: Option<&str>, budget: usize) -> bool {
    // Cheap bound first: text alone already too big.
    if 2 * json_len(text) + EDIT_OVERHEAD > budget {
        return false;
    }
    let html = to_html(&with_fence(fence, text));
    edit_size(text, html.as_deref()) <= budget
}

/// Prefix a part that starts inside a code block with its opening fence,
/// so that it renders as code (the plain body stays as streamed).
pub fn with_fence(fence: Option<&str>, text: &str) -> String {
    match fence {
        Some(f) => format!("{f}\n{text}"),
        None => text.to_string(),
    }
}

/// Where to cut `text` so that the first piece fits in `budget`: the end of
/// the last paragraph, line or word in the second half of the longest piece
/// that fits, else that piece's end. Always at least one character.
pub fn split_point(text: &str, fence: Option<&str>, budget: usize) -> usize {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .chain(std::iter::once(text.len()))
        .collect();
    // Longest prefix that fits (binary search over char boundaries).
    let (mut lo, mut hi) = (0usize, bounds.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(&text[..bounds[mid - 1]], fence, budget) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let longest = if lo == 0 { bounds[0] } else { bounds[lo - 1] };
    let head = &text[..longest];
    for sep in ["\n\n", "\n", " "] {
        if let Some(i) = head.rfind(sep) {
            let cut = i + sep.len();
            if cut >= longest / 2 && cut > 0 && fits(&text[..cut], fence, budget) {
                return cut;
            }
        }
    }
    longest
}

/// The opening fence line of the code block still open at the end of
/// `text`, if any.
pub fn open_fence(text: &str) -> Option<String> {
    let mut open: Option<(char, usize, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start_matches(' ');
        if line.len() - trimmed.len() > 3 {
            continue;
        }
        let Some(c) = trimmed.chars().next().filter(|c| *c == '`' || *c == '~') else {
            continue;
        };
        let run = trimmed.chars().take_while(|x| *x == c).count();
        if run < 3 {
            continue;
        }
        match &open {
            None => open = Some((c, run, trimmed.to_string())),
            Some((oc, orun, _)) => {
                if c == *oc && run >= *orun && trimmed[run..].trim().is_empty() {
                    open = None;
                }
            }
        }
    }
    open.map(|(_, _, line)| line)
}

/// FNV-1a: a stable hash for "has this exact content been shown".
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
