//! The Synapse harness itself: a real homeserver starts, users register
//! with the shared secret and log in, and the rate limits are Synapse's
//! own unless relaxed.

use surfaces_tests::synapse::{Options, Synapse};

fn login(synapse: &Synapse, user: &str, password: &str) -> (u16, String) {
    let body = format!(
        r#"{{"type": "m.login.password", "identifier": {{"type": "m.id.user", "user": "{user}"}}, "password": "{password}"}}"#
    );
    synapse.request("POST", "/_matrix/client/v3/login", Some(&body))
}

#[test]
fn a_registered_user_logs_in_and_a_wrong_password_is_refused() {
    let synapse = Synapse::start(Options {
        relax_rate_limits: true,
        ..Options::default()
    });
    synapse.register("alice", "alice-password", false);
    let (status, body) = login(&synapse, "alice", "alice-password");
    assert_eq!(status, 200, "{body}\n{}", synapse.log());
    assert!(body.contains("access_token"), "{body}");
    assert!(body.contains("@alice:localhost"), "{body}");
    let (status, body) = login(&synapse, "alice", "not-her-password");
    assert_eq!(status, 403, "{body}");
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn the_default_message_rate_limit_is_synapse_s_own() {
    // What the rate-limit tests rely on: no relaxation means Synapse's
    // `rc_message` (0.2/s, burst 10), answered with 429 and a delay.
    let synapse = Synapse::start(Options::default());
    synapse.register("bob", "bob-password", false);
    let (status, body) = login(&synapse, "bob", "bob-password");
    assert_eq!(status, 200, "{body}");
    let token = json(&body)["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    let (status, body) =
        synapse.request_as(&token, "POST", "/_matrix/client/v3/createRoom", Some("{}"));
    assert_eq!(status, 200, "{body}");
    let room = json(&body)["room_id"].as_str().expect("a room").to_string();
    let mut limited = None;
    for n in 0..20 {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{n}");
        let (status, body) = synapse.request_as(
            &token,
            "PUT",
            &path,
            Some(r#"{"msgtype": "m.text", "body": "hi"}"#),
        );
        if status == 429 {
            limited = Some((n, json(&body)));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (n, body) = limited.expect("Synapse limits a burst of sends");
    assert!(n >= 5, "limited after only {n} sends");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().is_some(), "{body}");
}
