//! The guest's pure logic, built natively: Markdown rendering and
//! sanitizing, splitting, settings, command parsing, and the pump that
//! turns a reply's text into sends and edits.

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
        // An unknown setting is kept aside to be logged, not refused: a
        // guest older than the configuration must still start.
        let c = Config::parse(&kv(&[("colour", "blue")])).unwrap();
        assert_eq!(c.unknown, vec!["colour"]);
    }
}

mod quota {
    use surfaces_guest::config::Config;
    use surfaces_guest::quota::*;
    use surfaces_guest::state::User;

    const DAY: u64 = 86_400_000;
    /// 2026-12-31 22:30 UTC.
    const NEW_YEARS_EVE: u64 = 1_798_756_200_000;

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limits_come_from_the_first_matching_override_else_the_defaults() {
        let c = Config::parse(&settings(&[
            ("quota_tokens_per_day", "1000"),
            ("quota_tokens_per_month", "none"),
            (
                "quota_overrides",
                "@boss:example.org=none/none, @*:partner.org=50/500, @*=10/none",
            ),
        ]))
        .unwrap();
        let q = &c.quotas;
        assert_eq!(
            q.defaults,
            Limits {
                day: Some(1000),
                month: None
            }
        );
        assert!(!q.limits("@boss:example.org").any());
        let partner = q.limits("@ann:partner.org");
        assert_eq!((partner.day, partner.month), (Some(50), Some(500)));
        assert_eq!(q.limits("@eve:elsewhere").day, Some(10));
        let bad = Config::parse(&settings(&[("quota_overrides", "@a:x=12")])).unwrap_err();
        assert!(
            bad.contains("quota_overrides") && bad.contains("PATTERN=DAY/MONTH"),
            "{bad}"
        );
        let bad = Config::parse(&settings(&[("quota_tokens_per_day", "lots")])).unwrap_err();
        assert!(bad.contains("quota_tokens_per_day"), "{bad}");
    }

    #[test]
    fn patterns_match_whole_ids() {
        assert!(matches("@*:example.org", "@alice:example.org"));
        assert!(!matches("@*:example.org", "@alice:example.org.evil"));
        assert!(matches("@alice:example.org", "@alice:example.org"));
        assert!(!matches("@alice:example.org", "@alice:example.orgx"));
        assert!(matches("*", ""));
        assert!(matches("@a*b*c", "@a-b-b-c"));
        assert!(!matches("@a*b*c", "@a-c"));
    }

    #[test]
    fn spending_resets_with_the_utc_day_and_month() {
        let mut s = Spent::default();
        s.add(NEW_YEARS_EVE, 70);
        s.add(NEW_YEARS_EVE + 60_000, 30);
        assert_eq!(s.at(NEW_YEARS_EVE), (100, 100));
        // Two hours later it is 2027: a new day and a new month.
        assert_eq!(s.at(NEW_YEARS_EVE + 2 * 3_600_000), (0, 0));
        s.add(NEW_YEARS_EVE + DAY, 5);
        assert_eq!(s.at(NEW_YEARS_EVE + DAY), (5, 5));
        // A clock set back a day gives nothing back: it still counts as
        // the newest day seen.
        s.add(NEW_YEARS_EVE, 1);
        assert_eq!(s.at(NEW_YEARS_EVE), (6, 6));
        assert_eq!(s.at(NEW_YEARS_EVE + DAY), (6, 6));
    }

    #[test]
    fn a_reply_cut_by_an_error_counts_about_four_bytes_a_token() {
        assert_eq!(estimate(0, 0), 0);
        assert_eq!(estimate(10, 30), 10);
        assert_eq!(estimate(1, 0), 1);
        assert_eq!(estimate(usize::MAX, 1), (usize::MAX / 4 + 1) as u64);
    }

    #[test]
    fn a_refusal_says_what_was_used_the_limit_and_when_it_resets() {
        let mut s = Spent::default();
        s.add(NEW_YEARS_EVE, 120);
        let day = Limits {
            day: Some(100),
            month: None,
        };
        let r = reached(day, &s, NEW_YEARS_EVE).unwrap();
        let text = refusal(&r, NEW_YEARS_EVE);
        assert_eq!(
            text,
            "🚫 You have used 120 of your 100 tokens today: your quota resets \
             2027-01-01 00:00 UTC (in 1 h 30 min). This message was not sent to the agent."
        );
        // Under the limit, nothing is reached; the month is checked first.
        assert_eq!(
            reached(
                Limits {
                    day: Some(121),
                    month: None
                },
                &s,
                NEW_YEARS_EVE
            ),
            None
        );
        let both = Limits {
            day: Some(100),
            month: Some(50),
        };
        assert_eq!(
            reached(both, &s, NEW_YEARS_EVE).unwrap().period,
            "this month"
        );
        assert_eq!(utc(NEW_YEARS_EVE), "2026-12-31 22:30 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn usage_shows_used_and_left_per_period() {
        let mut s = Spent::default();
        s.add(NEW_YEARS_EVE, 1234);
        let text = usage(
            Limits {
                day: Some(5000),
                month: None,
            },
            &s,
            NEW_YEARS_EVE,
        );
        assert_eq!(
            text,
            "\n\n- Today: 1,234 of 5,000 tokens, 3,766 left (resets 2027-01-01 00:00 UTC)\
             \n- This month: 1,234 tokens, no limit"
        );
    }

    #[test]
    fn a_user_record_from_before_quotas_still_reads() {
        let old = r#"{"display_name":null,"first_seen_ms":1,"messages":2,"tokens":3,"skills":{}}"#;
        let u: User = serde_json::from_str(old).unwrap();
        assert_eq!(u.quota, Spent::default());
        assert_eq!((u.busy, u.held.len()), (None, 0));
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

    /// The contract's command words are exactly the ones the guest parses
    /// (the simulator and group rooms decide by that list).
    #[test]
    fn the_contract_lists_every_command_word() {
        for word in surfaces_contract::COMMANDS {
            assert!(
                !matches!(parse(word, "!"), Command::Unknown(_)),
                "{word} is in the contract but the guest does not know it"
            );
        }
        for word in NAMES {
            assert!(
                surfaces_contract::is_command(word),
                "{word} is missing from the contract"
            );
        }
        for word in ["dance", "helpme", "stopp", ""] {
            assert!(!surfaces_contract::is_command(word));
            assert!(matches!(parse(word, "!"), Command::Unknown(_)));
        }
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
                    // A ':' after a '/', '?' or '#' is in a relative URL's
                    // path, query or fragment ("/:" is a path), not a scheme.
                    let relative = scheme.contains(['/', '?', '#']);
                    prop_assert!(
                        !lower.contains(':')
                            || relative
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

mod pump {
    use proptest::prelude::*;
    use surfaces_guest::bot::pump::{Answer, Next, Pace, Target, Update, answered, issued, next};
    use surfaces_guest::render;
    use surfaces_guest::state::{Ending, Queued, Reply};
    use surfaces_guest::types::{MatrixError, MatrixErrorKind};

    const INTERVAL: u64 = 1000;
    const PACE: Pace = Pace {
        interval_ms: INTERVAL,
        max_edits: 60,
    };
    const BUDGET: usize = 46 * 1024 - render::EDIT_OVERHEAD;

    fn reply(budget: usize) -> Reply {
        let origin = Queued {
            room_id: "!dm:test".into(),
            event_id: "$q".into(),
            sender: "@alice:test".into(),
            display_name: None,
            text: "question".into(),
            thread_root: None,
            is_direct: true,
            attempts: 0,
            with: Vec::new(),
            files: Vec::new(),
            queued_ms: None,
        };
        Reply::new("shared".into(), origin, budget, None)
    }

    #[test]
    fn the_interval_grows_as_the_edit_budget_is_spent_and_with_retry_after() {
        let mut r = reply(BUDGET);
        let pace = Pace {
            interval_ms: 1000,
            max_edits: 60,
        };
        assert_eq!(pace.interval(&r, 0, 100, false), 1000);
        assert_eq!(pace.interval(&r, 15, 100, false), 2000);
        assert_eq!(pace.interval(&r, 45, 100, false), 8000);
        // Longer text, longer wait: 8 s, three times over for 40 KiB.
        assert_eq!(pace.interval(&r, 59, 40 * 1024, false), 24_000);
        // A final text waits for the configured interval only.
        assert_eq!(pace.interval(&r, 59, 40 * 1024, true), 1000);
        // Never closer than the homeserver asked.
        r.retry_after_ms = 5000;
        assert_eq!(pace.interval(&r, 0, 100, false), 5000);
        assert_eq!(pace.interval(&r, 59, 100, true), 5000);
        // One edit is kept for the final text.
        assert!(pace.may_edit(58) && !pace.may_edit(59));
    }

    fn update(n: Next) -> Update {
        match n {
            Next::Update(u) => u,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    /// The pump's next update at `now`, issued as `request`.
    fn send(r: &mut Reply, text: &str, request: u64, now: u64) -> Update {
        let u = update(next(r, text, now, &PACE).unwrap());
        issued(r, &u, request, now);
        u
    }

    /// A reply whose first send (request 3, at 0) the homeserver refuses
    /// at 100 with `kind`; and what the pump makes of it.
    fn first_send_fails(
        text: &str,
        kind: MatrixErrorKind,
        retry_after_ms: Option<u64>,
    ) -> (Reply, Answer) {
        let mut r = reply(BUDGET);
        send(&mut r, text, 3, 0);
        let answer = answered(&mut r, 3, &error(kind, retry_after_ms), 100);
        (r, answer)
    }

    fn error(kind: MatrixErrorKind, retry_after_ms: Option<u64>) -> Result<String, MatrixError> {
        Err(MatrixError {
            kind,
            message: "test".into(),
            retry_after_ms,
        })
    }

    #[test]
    fn sends_once_then_edits_the_original_at_most_once_per_interval() {
        let mut r = reply(BUDGET);
        let u = update(next(&mut r, "Hel", 0, &PACE).unwrap());
        assert_eq!(u.target, Target::First);
        assert!(u.content.live);
        issued(&mut r, &u, 7, 0);
        assert_eq!(r.parts[0].send_request, Some(7));
        // One request in flight per reply.
        assert_eq!(next(&mut r, "Hello", 10, &PACE).unwrap(), Next::Idle);
        assert_eq!(answered(&mut r, 7, &Ok("$a".into()), 50), Answer::Pump);
        assert_eq!(
            next(&mut r, "Hello", 50, &PACE).unwrap(),
            Next::FlushIn(950)
        );
        let u = update(next(&mut r, "Hello", 1000, &PACE).unwrap());
        assert_eq!(u.target, Target::Edit("$a".into()));
        issued(&mut r, &u, 8, 1000);
        assert_eq!(answered(&mut r, 8, &Ok("$edit".into()), 1050), Answer::Pump);
        // The edit's own id never becomes the target.
        r.ending = Some(Ending::Complete);
        let u = update(next(&mut r, "Hello", 2000, &PACE).unwrap());
        assert_eq!(u.target, Target::Edit("$a".into()));
        assert!(!u.content.live, "the final edit drops the live marker");
        issued(&mut r, &u, 9, 2000);
        assert_eq!(
            answered(&mut r, 9, &Ok("$edit2".into()), 2050),
            Answer::Pump
        );
        assert_eq!(next(&mut r, "Hello", 2050, &PACE).unwrap(), Next::Done);
    }

    #[test]
    fn a_stale_answer_changes_nothing() {
        let mut r = reply(BUDGET);
        send(&mut r, "Hi", 3, 0);
        let before = r.clone();
        assert_eq!(answered(&mut r, 99, &Ok("$x".into()), 10), Answer::Stale);
        assert_eq!(r, before);
    }

    #[test]
    fn a_429_holds_every_update_until_it_is_over() {
        let (mut r, answer) = first_send_fails("Hi", MatrixErrorKind::RateLimited, Some(5000));
        assert_eq!(answer, Answer::Pump);
        assert_eq!(
            next(&mut r, "Hi there", 100, &PACE).unwrap(),
            Next::FlushIn(5000)
        );
        // Held edits fold into one: the retry carries the latest text.
        let u = update(next(&mut r, "Hi there", 5100, &PACE).unwrap());
        assert_eq!(
            u.target,
            Target::Again(3),
            "the same request, so the same transaction id"
        );
        assert_eq!(u.content.body, "Hi there");
    }

    #[test]
    fn a_retried_send_that_had_landed_is_followed_by_an_edit() {
        // The homeserver stored it, but the answer was lost.
        let (mut r, answer) = first_send_fails("old", MatrixErrorKind::Unavailable, None);
        assert_eq!(answer, Answer::Pump);
        let retry = update(next(&mut r, "old and new", 2000, &PACE).unwrap());
        assert_eq!(retry.target, Target::Again(3));
        issued(&mut r, &retry, 3, 2000);
        // The transaction id returns the first event, which shows "old".
        assert_eq!(
            answered(&mut r, 3, &Ok("$first".into()), 2100),
            Answer::Pump
        );
        let edit = update(next(&mut r, "old and new", 3000, &PACE).unwrap());
        assert_eq!(edit.target, Target::Edit("$first".into()));
        assert_eq!(edit.content.body, "old and new");
    }

    #[test]
    fn a_413_shrinks_the_budget_and_splits_again() {
        let (mut r, answer) = first_send_fails("some text", MatrixErrorKind::TooLarge, None);
        assert_eq!(answer, Answer::Pump);
        let too_large = error(MatrixErrorKind::TooLarge, None);
        assert_eq!(r.budget, BUDGET * 2 / 3);
        for i in 1..20 {
            let now = i * 10_000;
            send(&mut r, "some text", 3, now);
            let _ = answered(&mut r, 3, &too_large, now);
        }
        assert_eq!(r.budget, 8 * 1024, "never below the floor");
    }

    #[test]
    fn an_outage_is_waited_out_however_long_it_lasts() {
        let (mut r, answer) = first_send_fails("Hi", MatrixErrorKind::Unavailable, None);
        assert_eq!(answer, Answer::Pump);
        let outage = error(MatrixErrorKind::Unavailable, None);
        let mut now = 0;
        for _ in 0..50 {
            now = now.max(r.hold_until) + 1;
            send(&mut r, "Hi", 3, now);
            assert_eq!(answered(&mut r, 3, &outage, now), Answer::Pump);
            assert!(r.hold_until - now <= 60_000, "a try a minute at least");
        }
        now = now.max(r.hold_until) + 1;
        send(&mut r, "Hi", 3, now);
        assert_eq!(answered(&mut r, 3, &Ok("$m".into()), now), Answer::Pump);
        assert_eq!(r.failures, 0);
    }

    #[test]
    fn a_room_that_refuses_is_given_up() {
        let (_, answer) = first_send_fails("Hi", MatrixErrorKind::Forbidden, None);
        assert_eq!(answer, Answer::GiveUp);
    }

    #[test]
    fn an_empty_reply_says_so() {
        let mut r = reply(BUDGET);
        assert_eq!(next(&mut r, "", 0, &PACE).unwrap(), Next::Idle);
        r.ending = Some(Ending::Complete);
        let u = update(next(&mut r, "", 0, &PACE).unwrap());
        assert_eq!(u.content.body, "*(The agent returned an empty reply.)*");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the text and its pace: the parts, once done, show the
        /// whole text in order, each within the event budget, each updated
        /// at most once per interval, one request in flight at a time.
        #[test]
        fn the_parts_end_up_showing_the_whole_text(
            pieces in prop::collection::vec(("[a-z \n`]{1,40}|[a-z \n]{1500,3000}", 0u64..700), 1..30),
            latency in 1u64..300,
            max_edits in 1u32..12,
        ) {
            let pace = Pace { interval_ms: INTERVAL, max_edits };
            let mut edits: Vec<u32> = Vec::new();
            let budget = 8 * 1024;
            let mut r = reply(budget);
            let mut text = String::new();
            let mut now = 0u64;
            let mut shown: Vec<(String, u64)> = Vec::new();
            let mut in_flight: Option<(Update, u64, u64)> = None;
            let mut request = 0u64;
            let mut pieces = pieces.into_iter();
            let mut steps = 0;
            let mut next_piece_at = 0u64;
            loop {
                steps += 1;
                prop_assert!(steps < 100_000, "the pump never finished");
                if let Some((u, req, at)) = in_flight.take() {
                    if now < at + latency {
                        in_flight = Some((u, req, at));
                    } else {
                        let id = format!("$p{}", u.part);
                        prop_assert_eq!(answered(&mut r, req, &Ok(id), now), Answer::Pump);
                        let body = u.content.body.clone();
                        if shown.len() <= u.part {
                            shown.push((body, now));
                        } else {
                            prop_assert!(now >= shown[u.part].1, "time runs forward");
                            shown[u.part] = (body, now);
                        }
                    }
                }
                if in_flight.is_none() {
                    match next(&mut r, &text, now, &pace).unwrap() {
                        Next::Done => break,
                        Next::Update(u) => {
                            if let Some(last) = r.parts[u.part].last_update {
                                prop_assert!(now >= last + INTERVAL, "updated within the interval");
                            }
                            if matches!(u.target, Target::Edit(_)) {
                                edits.resize(edits.len().max(u.part + 1), 0);
                                edits[u.part] += 1;
                                prop_assert!(edits[u.part] <= max_edits, "part {} edited past its budget of {max_edits}", u.part);
                            }
                            prop_assert!(render::fits(&u.content.body, r.parts[u.part].fence.as_deref(), budget));
                            request += 1;
                            issued(&mut r, &u, request, now);
                            in_flight = Some((u, request, now));
                        }
                        Next::Idle | Next::FlushIn(_) => {}
                    }
                }
                now += 50;
                if now >= next_piece_at {
                    match pieces.next() {
                        Some((piece, pause)) => {
                            text.push_str(&piece);
                            r.len = text.len();
                            next_piece_at = now + pause;
                        }
                        None if r.ending.is_none() => r.ending = Some(Ending::Complete),
                        None => {}
                    }
                }
            }
            let joined: String = shown.iter().map(|(b, _)| b.as_str()).collect();
            prop_assert_eq!(joined, text);
        }
    }
}

mod files {
    use proptest::prelude::*;
    use surfaces_guest::bot::{agent_names, drop_failed};
    use surfaces_guest::state::{Attached, FileKind};

    fn file(i: usize, name: &str) -> Attached {
        Attached {
            event_id: format!("$e{i}"),
            id: format!("surfaces-media:kept {i}"),
            name: name.to_string(),
            mime: "image/png".into(),
            size: None,
            kind: FileKind::Image,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Phones name every photo alike: each file still goes to the agent
        /// under a name of its own, and a host error naming one (in any of
        /// `surfaces_embed::media`'s words) drops that one, not another of
        /// the same name; past the count, that one and those after it.
        #[test]
        fn an_error_drops_the_file_it_names_however_alike_the_names(
            names in prop::collection::vec(
                prop::sample::select(vec!["image.png", "image (2).png", "a", "a b.png", ".env", "x.tar.gz"]),
                1..8,
            ),
            pick in any::<prop::sample::Index>(),
            form in 0..4usize,
        ) {
            let files: Vec<Attached> = names.iter().enumerate().map(|(i, n)| file(i, n)).collect();
            let sent = agent_names(&files);
            let mut unique = sent.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), sent.len(), "{:?}", sent);
            let i = pick.index(files.len());
            let n = &sent[i];
            let message = match form {
                0 => format!("{n} is 9 MiB, over the 8 MiB the agent takes"),
                1 => format!("could not fetch {n}: M_NOT_FOUND"),
                2 => format!("{n} would bring this message's files to 41 MiB, over the 40 MiB one message takes"),
                _ => format!("{n} is file {}, over the 20 files one message takes", i + 1),
            };
            let mut left = files.clone();
            drop_failed(&mut left, &message);
            let mut want = files.clone();
            if form == 3 {
                want.truncate(i);
            } else {
                want.remove(i);
            }
            prop_assert_eq!(left, want, "{}", message);
        }
    }
}
