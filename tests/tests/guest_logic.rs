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
    use std::sync::LazyLock;

    use surfaces_guest::bot::pump::{
        Answer, Budget, Next, Pace, Target, Update, answered, issued, next,
    };
    use surfaces_guest::rate::RateModel;
    use surfaces_guest::render;
    use surfaces_guest::state::{Ending, Queued, Reply};
    use surfaces_guest::types::{MatrixError, MatrixErrorKind};

    const INTERVAL: u64 = 1000;
    const PACE: Pace = Pace {
        interval_ms: INTERVAL,
        max_edits: 60,
    };
    const BUDGET: usize = 46 * 1024 - render::EDIT_OVERHEAD;

    /// A homeserver that limits nothing: only the pump's own pace counts.
    fn free() -> Budget<'static> {
        static UNLIMITED: LazyLock<RateModel> = LazyLock::new(|| RateModel::new(0.0, 1));
        Budget {
            rate: &UNLIMITED,
            open: 1,
            waiting: 0,
        }
    }

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
        // A final text waits for no interval.
        assert_eq!(pace.interval(&r, 59, 40 * 1024, true), 0);
        // Never closer than the homeserver asked (a final text waits for
        // the hold after a 429 alone).
        r.retry_after_ms = 5000;
        assert_eq!(pace.interval(&r, 0, 100, false), 5000);
        assert_eq!(pace.interval(&r, 59, 100, true), 0);
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
        let u = update(next(r, text, now, &PACE, free()).unwrap());
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
        let u = update(next(&mut r, "Hel", 0, &PACE, free()).unwrap());
        assert_eq!(u.target, Target::First);
        assert!(u.content.live);
        issued(&mut r, &u, 7, 0);
        assert_eq!(r.parts[0].send_request, Some(7));
        // One request in flight per reply.
        assert_eq!(
            next(&mut r, "Hello", 10, &PACE, free()).unwrap(),
            Next::Idle
        );
        assert_eq!(answered(&mut r, 7, &Ok("$a".into()), 50), Answer::Pump);
        assert_eq!(
            next(&mut r, "Hello", 50, &PACE, free()).unwrap(),
            Next::FlushIn(950)
        );
        let u = update(next(&mut r, "Hello", 1000, &PACE, free()).unwrap());
        assert_eq!(u.target, Target::Edit("$a".into()));
        issued(&mut r, &u, 8, 1000);
        assert_eq!(answered(&mut r, 8, &Ok("$edit".into()), 1050), Answer::Pump);
        // The edit's own id never becomes the target.
        r.ending = Some(Ending::Complete);
        let u = update(next(&mut r, "Hello", 2000, &PACE, free()).unwrap());
        assert_eq!(u.target, Target::Edit("$a".into()));
        assert!(!u.content.live, "the final edit drops the live marker");
        issued(&mut r, &u, 9, 2000);
        assert_eq!(
            answered(&mut r, 9, &Ok("$edit2".into()), 2050),
            Answer::Pump
        );
        assert_eq!(
            next(&mut r, "Hello", 2050, &PACE, free()).unwrap(),
            Next::Done
        );
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
            next(&mut r, "Hi there", 100, &PACE, free()).unwrap(),
            Next::FlushIn(5000)
        );
        // Held edits fold into one: the retry carries the latest text.
        let u = update(next(&mut r, "Hi there", 5100, &PACE, free()).unwrap());
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
        let retry = update(next(&mut r, "old and new", 2000, &PACE, free()).unwrap());
        assert_eq!(retry.target, Target::Again(3));
        issued(&mut r, &retry, 3, 2000);
        // The transaction id returns the first event, which shows "old".
        assert_eq!(
            answered(&mut r, 3, &Ok("$first".into()), 2100),
            Answer::Pump
        );
        let edit = update(next(&mut r, "old and new", 3000, &PACE, free()).unwrap());
        assert_eq!(edit.target, Target::Edit("$first".into()));
        assert_eq!(edit.content.body, "old and new");
    }

    #[test]
    fn more_text_within_the_interval_waits_and_a_full_part_is_cut_at_its_next_update() {
        let mut r = reply(8 * 1024);
        send(&mut r, "Hi", 3, 0);
        assert_eq!(answered(&mut r, 3, &Ok("$m".into()), 50), Answer::Pump);
        // More text, even past what one event holds, waits for the
        // interval (decided before the part is rendered: chunks come far
        // more often than updates).
        let long = format!("Hi {}", "word ".repeat(4000));
        assert_eq!(
            next(&mut r, "Hi there", 100, &PACE, free()).unwrap(),
            Next::FlushIn(900)
        );
        assert_eq!(
            next(&mut r, &long, 200, &PACE, free()).unwrap(),
            Next::FlushIn(800)
        );
        // Then the part is cut where it fits, as its final text, and the
        // rest goes on in a new message.
        let cut = send(&mut r, &long, 4, 1000);
        assert!(!cut.content.live && cut.target == Target::Edit("$m".into()));
        assert!(cut.content.body.len() < long.len() && long.starts_with(&cut.content.body));
        assert_eq!(answered(&mut r, 4, &Ok("$e".into()), 1050), Answer::Pump);
        let rest = send(&mut r, &long, 5, 1050);
        assert_eq!((rest.part, rest.target), (1, Target::First));
        assert!(long[cut.content.body.len()..].starts_with(&rest.content.body));
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
        assert_eq!(next(&mut r, "", 0, &PACE, free()).unwrap(), Next::Idle);
        r.ending = Some(Ending::Complete);
        let u = update(next(&mut r, "", 0, &PACE, free()).unwrap());
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
                    match next(&mut r, &text, now, &pace, free()).unwrap() {
                        Next::Done => break,
                        Next::Update(u) => {
                            if let Some(last) = r.parts[u.part].last_update
                                && u.content.live
                            {
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

mod rate {
    use proptest::prelude::*;
    use surfaces_guest::rate::{RateModel, Spend};

    /// Synapse's ratelimiter (`synapse/api/ratelimiting.py`), the
    /// homeserver's side: an action is refused while the actions it has
    /// counted, less what drained since, exceed `burst - 1`; a refused one
    /// is not counted, and the answer says when one would be taken.
    struct Synapse {
        rate: f64,
        burst: f64,
        count: f64,
        start: f64,
    }

    impl Synapse {
        fn new(rate: f64, burst: f64) -> Synapse {
            Synapse {
                rate,
                burst,
                count: 0.0,
                start: 0.0,
            }
        }

        fn send(&mut self, now_ms: u64) -> Result<(), u64> {
            let now = now_ms as f64 / 1000.0;
            let mut performed = self.count - (now - self.start) * self.rate;
            if performed < 0.0 {
                performed = 0.0;
                self.count = 0.0;
                self.start = now;
            }
            if performed > self.burst - 1.0 {
                let allowed = self.start + (self.count - self.burst + 1.0) / self.rate;
                return Err(((allowed - now) * 1000.0).ceil().max(1.0) as u64);
            }
            self.count += 1.0;
            Ok(())
        }
    }

    /// One streamed reply as the pump spends the budget: it wants an
    /// update a second from `start` to `end`, its final text at `end`.
    #[derive(Clone, Debug)]
    struct Stream {
        start: u64,
        end: u64,
        sent: bool,
        next_update: u64,
        /// When its final text went.
        done: Option<u64>,
        /// When it began, the budget had an event for its final text
        /// beyond those the open replies keep for theirs.
        room: Option<bool>,
    }

    /// Run `streams` against `server` with `model`, a step per 10 ms;
    /// the refusals the finals met.
    fn drive(model: &mut RateModel, server: &mut Synapse, streams: &mut [Stream]) -> u32 {
        let mut refused_finals = 0;
        let horizon = streams.iter().map(|s| s.end).max().unwrap_or(0) + 600_000;
        let mut now = 0;
        while now < horizon && streams.iter().any(|s| s.done.is_none()) {
            let mut open = streams
                .iter()
                .filter(|s| s.start <= now && s.done.is_none() && s.room.is_some())
                .count();
            for s in streams
                .iter_mut()
                .filter(|s| s.start <= now && s.room.is_none())
            {
                s.room = Some(model.wait_ms(now, Spend::Answer, open) == Some(0));
                open += 1;
            }
            for s in streams.iter_mut() {
                // A final text waits for no interval.
                if s.start > now || s.done.is_some() || (now < s.next_update && now < s.end) {
                    continue;
                }
                let spend = if now >= s.end {
                    Spend::Final
                } else if s.sent {
                    Spend::Edit
                } else {
                    Spend::Opening
                };
                if model.wait_ms(now, spend, open) != Some(0) {
                    continue;
                }
                model.spent(now);
                match server.send(now) {
                    Ok(()) => {
                        model.taken(now);
                        s.sent = true;
                        s.next_update = now + 1000;
                        if spend == Spend::Final {
                            s.done = Some(now);
                        }
                    }
                    Err(retry) => {
                        if spend == Spend::Final {
                            refused_finals += 1;
                        }
                        model.refused(now, Some(retry));
                    }
                }
            }
            now += 10;
        }
        refused_finals
    }

    fn stream(start: u64, seconds: u64) -> Stream {
        Stream {
            start,
            end: start + seconds * 1000,
            sent: false,
            next_update: start,
            done: None,
            room: None,
        }
    }

    #[test]
    fn three_replies_in_a_row_each_end_at_once_under_synapse_defaults() {
        let mut model = RateModel::new(0.2, 10);
        let mut server = Synapse::new(0.2, 10.0);
        // Each asked a second after the last answer ended.
        let mut streams = vec![stream(0, 10), stream(11_000, 10), stream(22_000, 10)];
        assert_eq!(drive(&mut model, &mut server, &mut streams), 0);
        for s in &streams {
            assert_eq!(s.done, Some(s.end), "{s:?}");
        }
    }

    #[test]
    fn a_429_teaches_a_stricter_limit() {
        // The guess is Synapse's default; this homeserver allows less than
        // half the burst at half the rate.
        let mut model = RateModel::guess(0.2, 10);
        let mut server = Synapse::new(0.1, 4.0);
        let mut streams: Vec<Stream> = (0..6).map(|i| stream(i * 15_000, 12)).collect();
        drive(&mut model, &mut server, &mut streams);
        let (rate, burst) = model.limit().expect("limited");
        println!("learnt: {rate} a second, bursts of {burst}");
        assert!((rate - 0.1).abs() < 0.01, "rate {rate}");
        // Learnt: from here on no final meets a refusal.
        let mut later: Vec<Stream> = (0..4).map(|i| stream(200_000 + i * 15_000, 12)).collect();
        assert_eq!(drive(&mut model, &mut server, &mut later), 0);
        for s in &later {
            assert_eq!(s.done, Some(s.end), "{s:?}");
        }
    }

    #[test]
    fn a_guess_holds_back_only_intermediate_edits() {
        let mut model = RateModel::guess(0.2, 10);
        for _ in 0..10 {
            model.spent(0);
        }
        // The guess says the bucket is full: a homeserver more generous
        // than the guess must not make answers or first texts wait for it.
        assert_eq!(model.wait_ms(0, Spend::Answer, 1), Some(0));
        assert_eq!(model.wait_ms(0, Spend::Opening, 1), Some(0));
        assert_eq!(model.wait_ms(0, Spend::Final, 1), Some(0));
        assert_ne!(model.wait_ms(0, Spend::Edit, 1), Some(0));
        // A 429 makes it the homeserver's word: now they keep to it.
        model.refused(0, Some(5_000));
        assert_ne!(model.wait_ms(5_000, Spend::Answer, 1), Some(0));
        assert_ne!(model.wait_ms(5_000, Spend::Opening, 1), Some(0));
    }

    #[test]
    fn a_told_limit_is_not_raised_by_events_counted_twice() {
        // Sends that met an outage count (they may have landed) and may
        // not have reached the bucket: the level then passes the burst
        // without the burst being larger.
        let mut model = RateModel::new(0.5, 5);
        for _ in 0..7 {
            model.spent(0);
        }
        model.taken(0);
        assert_eq!(model.limit(), Some((0.5, 5.0)));
        // A guess learns from it (a final text may always go).
        let mut guess = RateModel::guess(0.5, 5);
        for _ in 0..7 {
            guess.spent(0);
        }
        guess.taken(0);
        assert_eq!(guess.limit(), Some((0.5, 7.0)));
    }

    #[test]
    fn no_limit_means_no_wait() {
        let model = RateModel::new(0.0, 10);
        assert_eq!(model.wait_ms(0, Spend::Edit, 100), Some(0));
        assert_eq!(model.limit(), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// With the homeserver's limit known, whatever the replies (up to
        /// the burst less one at a time), every final text goes; and if
        /// each reply, when it began, found an event for its final text
        /// beyond those the open replies keep for theirs, none meets a
        /// 429 or waits. (A reply that begins with the budget spent sends
        /// its final text anyway and may meet a 429, or take an event
        /// another reply kept: known, left.)
        #[test]
        fn a_known_limit_never_holds_a_final_text(
            rate in 0.05f64..5.0,
            burst in 2u32..30,
            replies in prop::collection::vec((0u64..30_000, 1u64..20), 1..8),
        ) {
            let mut model = RateModel::new(rate, burst);
            let mut server = Synapse::new(model.limit().unwrap().0, f64::from(burst));
            let mut streams: Vec<Stream> = replies
                .iter()
                .map(|&(start, seconds)| stream(start / 10 * 10, seconds))
                .collect();
            // At most burst - 1 open at once.
            streams.truncate((burst - 1) as usize);
            let refused = drive(&mut model, &mut server, &mut streams);
            prop_assert!(streams.iter().all(|s| s.done.is_some()));
            if streams.iter().all(|s| s.room == Some(true)) {
                prop_assert_eq!(refused, 0);
                for s in &streams {
                    prop_assert_eq!(s.done, Some(s.end), "{:?}", s);
                }
            }
        }
    }
}
