//! The guest's pure logic, built natively: Markdown rendering and
//! sanitizing, splitting, settings, command parsing.

mod render {
    use surfaces_guest::render::*;

    #[test]
    fn plain_text_has_no_html() {
        assert_eq!(to_html("hello world"), None);
        assert_eq!(to_html("a & b"), None);
    }

    #[test]
    fn markdown_is_rendered() {
        assert_eq!(
            to_html("**bold** and `code`").as_deref(),
            Some("<p><strong>bold</strong> and <code>code</code></p>\n")
        );
    }

    #[test]
    fn raw_html_is_escaped() {
        let html = to_html("hi <script>alert(1)</script> *x*").unwrap();
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn unsafe_links_are_dropped_but_text_kept() {
        let html = to_html("[click](javascript:alert(1)) [ok](https://x.org)").unwrap();
        assert!(!html.contains("javascript"), "{html}");
        assert!(html.contains("click"), "{html}");
        assert!(html.contains("href=\"https://x.org\""), "{html}");
        let html = to_html("[x](<java\tscript:alert(1)>)").unwrap_or_default();
        assert!(!html.contains("href"), "{html}");
    }

    #[test]
    fn http_images_become_links() {
        let html = to_html("![cat](https://x.org/cat.png)").unwrap();
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("<a href=\"https://x.org/cat.png\">cat</a>"),
            "{html}"
        );
        let html = to_html("![cat](mxc://x.org/abc)").unwrap();
        assert!(html.contains("<img src=\"mxc://x.org/abc\""), "{html}");
    }

    #[test]
    fn split_prefers_paragraphs() {
        let text = format!("{}\n\n{}", "a ".repeat(3000), "b ".repeat(3000));
        let cut = split_point(&text, None, 16_000);
        assert!(text[..cut].ends_with("\n\n"), "cut at {cut}");
        assert!(fits(&text[..cut], None, 16_000));
    }

    #[test]
    fn split_of_unbroken_text_fits() {
        let text = "é".repeat(20_000);
        let cut = split_point(&text, None, 16_000);
        assert!(text.is_char_boundary(cut));
        assert!(cut > 0 && fits(&text[..cut], None, 16_000));
        assert!(!fits(&text[..cut + 2], None, 16_000));
    }

    #[test]
    fn fences() {
        assert_eq!(
            open_fence("x\n```rust\nfn f() {}\n"),
            Some("```rust".into())
        );
        assert_eq!(open_fence("```\na\n```\n"), None);
        assert_eq!(open_fence("~~~~\n```\n"), Some("~~~~".into()));
    }
}

mod config {
    use surfaces_guest::config::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse(&kv(&[
            ("command_prefix", "/"),
            ("context_scope", "thread"),
            ("admins", "@a:x, @b:y"),
        ]))
        .unwrap();
        assert_eq!(c.command_prefix, "/");
        assert_eq!(c.scope, Scope::Thread);
        assert_eq!(c.admins, vec!["@a:x", "@b:y"]);
        assert_eq!(c.edit_interval_ms, 1000);
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::parse(&kv(&[("edit_interval_ms", "soon")])).unwrap_err();
        assert!(e.contains("edit_interval_ms"), "{e}");
        let e = Config::parse(&kv(&[("colour", "blue")])).unwrap_err();
        assert!(e.contains("unknown setting \"colour\""), "{e}");
    }
}

mod commands {
    use surfaces_guest::commands::*;

    #[test]
    fn parses() {
        assert_eq!(parse("help", "!"), Command::Help);
        assert_eq!(parse("RESET", "!"), Command::New);
        assert_eq!(
            parse("skill code on", "!"),
            Command::Skill {
                name: "code".into(),
                on: true
            }
        );
        assert!(matches!(
            parse("skill code maybe", "!"),
            Command::Misused(_)
        ));
        assert_eq!(parse("dance", "!"), Command::Unknown("dance".into()));
    }

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(suggest("stauts"), Some("status"));
        assert_eq!(suggest("hlep"), Some("help"));
        assert_eq!(suggest("xyzzy"), None);
    }

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}

mod sanitizing {
    use proptest::prelude::*;
    use surfaces_guest::render::{fits, split_point, to_html};

    /// The tags the Matrix spec allows in `formatted_body`.
    const ALLOWED: &[&str] = &[
        "font",
        "del",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "p",
        "a",
        "ul",
        "ol",
        "sup",
        "sub",
        "li",
        "b",
        "i",
        "u",
        "strong",
        "em",
        "s",
        "code",
        "hr",
        "br",
        "div",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "caption",
        "pre",
        "span",
        "img",
        "details",
        "summary",
    ];

    fn markdownish() -> impl Strategy<Value = String> {
        let fragment = prop_oneof![
            "[a-z ]{0,12}",
            "[<>\\[\\]()!*_`#:/\\- \n\"'&=]{0,8}",
            Just("[x](".to_string()),
            Just("](".to_string()),
            Just("javascript:".to_string()),
            Just("JaVa\tScRiPt:".to_string()),
            Just("data:text/html,".to_string()),
            Just("<img src=x onerror=alert(1)>".to_string()),
            Just("<a href=\"javascript:x\">".to_string()),
            Just("![a](".to_string()),
            Just("mxc://x/y".to_string()),
            Just("https://x.org".to_string()),
            Just("\n```\n".to_string()),
            Just("| a | b |\n|---|:-:|\n".to_string()),
            Just("> ".to_string()),
        ];
        prop::collection::vec(fragment, 0..24).prop_map(|v| v.concat())
    }

    /// Every `<tag` in the output (the writer escapes every `<` of text).
    fn tags(html: &str) -> Vec<String> {
        html.split('<')
            .skip(1)
            .map(|rest| {
                rest.trim_start_matches('/')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect()
            })
            .collect()
    }

    /// Every value of an `href` or `src` attribute inside a tag.
    fn urls(html: &str) -> Vec<String> {
        let mut out = Vec::new();
        for tag in html
            .split('<')
            .skip(1)
            .map(|t| t.split('>').next().unwrap_or(""))
        {
            for attr in ["href=\"", "src=\""] {
                for (i, _) in tag.match_indices(attr) {
                    let rest = &tag[i + attr.len()..];
                    out.push(rest.split('"').next().unwrap_or("").to_string());
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn html_uses_only_allowed_tags_and_safe_urls(md in markdownish()) {
            if let Some(html) = to_html(&md) {
                for tag in tags(&html) {
                    prop_assert!(ALLOWED.contains(&tag.as_str()), "tag <{tag}> in {html:?}");
                }
                for url in urls(&html) {
                    let lower = url.to_ascii_lowercase();
                    let scheme = lower.split(':').next().unwrap_or("");
                    prop_assert!(
                        !lower.contains(':')
                            || ["http", "https", "ftp", "mailto", "magnet", "matrix", "mxc"]
                                .contains(&scheme),
                        "unsafe url {url:?} in {html:?}"
                    );
                }
                for img in html.match_indices("<img").map(|(i, _)| &html[i..]) {
                    prop_assert!(img.contains("src=\"mxc://"), "non-mxc image in {html:?}");
                }
            }
        }

        #[test]
        fn split_point_fits_and_cuts_at_a_char_boundary(
            text in "[a-zé<&\" \n*`]{1,3000}",
            budget in 4_000usize..9_000,
        ) {
            let cut = split_point(&text, None, budget);
            prop_assert!(cut > 0 && cut <= text.len());
            prop_assert!(text.is_char_boundary(cut));
            prop_assert!(fits(&text[..cut], None, budget), "piece of {cut} bytes does not fit");
        }
    }
}
