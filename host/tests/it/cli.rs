//! The `surfaces` command line, run as a user would.

use std::process::Command;

fn surfaces(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_surfaces"))
        .args(args)
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn guest_check_accepts_the_shipped_guest() {
    let (ok, out) = surfaces(&["guest", "check", surfaces_artifacts::GUEST_WASM_PATH]);
    assert!(ok, "{out}");
    assert!(out.contains("ok: surfaces-guest"), "{out}");
}

#[test]
fn guest_check_refuses_a_component_without_handle() {
    let (ok, out) = surfaces(&["guest", "check", surfaces_artifacts::BROKEN_WASM_PATH]);
    assert!(!ok, "{out}");
    assert!(out.contains("is not a guest this host can run"), "{out}");
}

#[test]
fn guest_check_reports_settings_the_guest_refuses() {
    let (ok, out) = surfaces(&[
        "guest",
        "check",
        surfaces_artifacts::GUEST_WASM_PATH,
        "--setting",
        "edit_interval_ms=soon",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("edit_interval_ms"), "{out}");
}

#[test]
fn guest_check_of_a_missing_file_says_so() {
    let (ok, out) = surfaces(&["guest", "check", "/nonexistent/guest.wasm"]);
    assert!(!ok, "{out}");
    assert!(out.contains("cannot read /nonexistent/guest.wasm"), "{out}");
}

#[test]
fn help_is_everywhere() {
    for args in [
        &["--help"][..],
        &["guest", "--help"],
        &["guest", "check", "--help"],
    ] {
        let (ok, out) = surfaces(args);
        assert!(ok && out.contains("Usage"), "{args:?}: {out}");
    }
}

/// One compiled-guest cache for every run: a debug build compiles a guest
/// slowly, and the tests run at once on few cores.
fn guest_cache() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-guest-cache")
}

/// `surfaces run --terminal` in `data` with the shared guest cache, logging
/// at `log`, then `env` (which may override both); stdin and stderr piped.
fn bot_command(data: &std::path::Path, log: &str, env: &[(&str, &str)]) -> Command {
    use std::process::Stdio;
    let mut command = Command::new(env!("CARGO_BIN_EXE_surfaces"));
    command
        .args(["run", "--terminal"])
        .env("SURFACES_DATA_DIR", data)
        .env("SURFACES_GUEST_CACHE", guest_cache())
        .env("SURFACES_LOG", log)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// `surfaces run` with `input` on stdin, in `data`, with extra env.
fn run_bot(data: &std::path::Path, input: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = bot_command(data, "warn", env)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    } // closed here: end of input stops the bot gracefully
    let out = child.wait_with_output().expect("exits");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_answers_on_the_terminal_and_remembers_across_restarts() {
    let data = tempfile::tempdir().expect("temp dir");
    let (ok, out, err) = run_bot(data.path(), "hello there\n", &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("Hi you!"), "first contact is greeted: {out}");
    assert!(
        out.contains("bot: hello there"),
        "the echo is streamed in full: {out}"
    );
    assert!(data.path().join("surfaces.db").exists());

    // A second run on the same data: the user is known, the reply complete.
    let (ok, out, err) = run_bot(data.path(), "once more\n!usage\n", &[]);
    assert!(ok, "{out}{err}");
    assert!(!out.contains("Hi you!"), "greeted twice: {out}");
    assert!(out.contains("once more"), "{out}");
    assert!(out.contains("**Usage**"), "usage answers: {out}");
}

#[test]
fn run_refuses_bad_configuration_clearly() {
    let data = tempfile::tempdir().expect("temp dir");
    let config = data.path().join("bad.toml");
    std::fs::write(&config, "[agent]\nbackend = \"mock\"\nurll = \"ws://x\"\n").expect("write");
    let config = config.to_string_lossy().into_owned();
    let (ok, out) = surfaces(&["run", "--config", &config]);
    assert!(!ok, "{out}");
    assert!(out.contains("bad.toml") && out.contains("urll"), "{out}");

    let (ok, _, err) = run_bot(data.path(), "", &[("MATRIX_PLATFORM_BACKEND", "real")]);
    assert!(!ok);
    assert!(err.contains("no agent URL is set"), "{err}");
    let (ok, _, err) = run_bot(data.path(), "", &[("MATRIX_PLATFORM_BACKEND", "fake")]);
    assert!(!ok);
    assert!(err.contains("MATRIX_PLATFORM_BACKEND"), "{err}");
}

#[test]
fn run_without_a_homeserver_says_how_to_get_one() {
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().to_string_lossy().into_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_surfaces"))
        .arg("run")
        .env("SURFACES_DATA_DIR", &data_dir)
        .env_remove("MATRIX_HOMESERVER")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("MATRIX_HOMESERVER") && err.contains("--terminal"),
        "{err}"
    );

    // A homeserver that is not listening: a clear error, no hang.
    let out = Command::new(env!("CARGO_BIN_EXE_surfaces"))
        .arg("run")
        .env("SURFACES_DATA_DIR", &data_dir)
        .env("MATRIX_HOMESERVER", "http://127.0.0.1:9")
        .env("MATRIX_USER", "@bot:localhost")
        .env("MATRIX_PASSWORD", "pw")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("login to http://127.0.0.1:9"), "{err}");

    // A bad pattern in the allow list is named.
    let config = data.path().join("allow.toml");
    std::fs::write(
        &config,
        "[matrix]\nhomeserver = \"http://127.0.0.1:9\"\nuser = \"bot\"\nallow = [\"alice\"]\n",
    )
    .expect("write");
    let (ok, out) = surfaces(&["run", "--config", &config.to_string_lossy()]);
    assert!(!ok);
    assert!(
        out.contains("\"alice\"") && out.contains("user id"),
        "{out}"
    );
}

#[test]
fn run_with_the_real_backend_talks_websocket_to_the_agent() {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let url = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = surfaces_host::agent::server::ServerConfig {
            mode: surfaces_host::agent::server::Mode::Script("scripted: the agent answered".into()),
            chunk_delay: std::time::Duration::from_millis(5),
            token: Some("s3cret-token".into()),
            ..Default::default()
        };
        tokio::spawn(surfaces_host::agent::server::serve(listener, config));
        format!("ws://{addr}/agent")
    });
    let data = tempfile::tempdir().expect("temp dir");
    let (ok, out, err) = run_bot(
        data.path(),
        "question\n",
        &[
            ("MATRIX_PLATFORM_BACKEND", "real"),
            ("AGENT_WS_URL", &url),
            ("AGENT_TOKEN", "s3cret-token"),
            ("SURFACES_LOG", "trace"),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("scripted: the agent answered"), "{out}");
    assert!(
        !err.contains("s3cret-token"),
        "a secret reached the logs: {err}"
    );
}

/// A bot running in the background; its log lines arrive on a channel so
/// a wait can give up instead of hanging.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(data: &std::path::Path, env: &[(&str, &str)]) -> Running {
        use std::io::{BufRead, BufReader};
        let mut child = bot_command(data, "info", env)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("runs");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut running = Running {
            child,
            lines,
            seen: Vec::new(),
        };
        running.wait_for("surfaces is running");
        running
    }

    /// The first log line containing `needle` from now on.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(std::time::Duration::from_secs(120)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name}");
    }

    /// Close its input (which stops it) and wait for the exit; true if it
    /// succeeded.
    fn exit(mut self) -> (bool, Vec<String>) {
        drop(self.child.stdin.take());
        self.wait()
    }

    /// Wait for the exit, input still open.
    fn wait(mut self) -> (bool, Vec<String>) {
        let status = self.child.wait().expect("exits");
        self.seen.extend(self.lines.iter());
        (status.success(), self.seen)
    }
}

#[test]
fn metrics_and_health_are_served_while_running() {
    use surfaces_tests::synapse::http;
    let data = tempfile::tempdir().expect("temp dir");
    let mut bot = Running::start(data.path(), &[("SURFACES_METRICS_LISTEN", "127.0.0.1:0")]);
    let line = bot
        .seen
        .iter()
        .find(|l| l.contains("metrics on http://"))
        .cloned()
        .unwrap_or_else(|| bot.wait_for("metrics on http://"));
    let addr = line
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("the metrics address is logged")
        .to_string();
    let port: u16 = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let get = |path: &str| http(port, "GET", path, None, None).expect("the endpoint answers");
    let (status, health) = get("/healthz");
    assert!(status == 200 && health.contains("serving"), "{health}");
    let (_, metrics) = get("/metrics");
    assert!(metrics.contains("surfaces_agent_connections"), "{metrics}");
    assert!(metrics.contains("surfaces_guest_call_seconds"), "{metrics}");
    // End of input: graceful shutdown.
    let (ok, lines) = bot.exit();
    assert!(ok, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:#?}");
}

#[test]
fn sighup_swaps_the_guest_file_and_sigterm_stops_gracefully() {
    let data = tempfile::tempdir().expect("temp dir");
    let guest = data.path().join("guest.wasm");
    std::fs::copy(surfaces_artifacts::GUEST_WASM_PATH, &guest).expect("copy the guest");
    let guest = guest.to_string_lossy().into_owned();
    let mut bot = Running::start(data.path(), &[("SURFACES_GUEST", &guest)]);
    bot.signal("HUP");
    bot.wait_for("the new guest is serving");
    // Stopped by the signal alone, the terminal still open.
    bot.signal("TERM");
    bot.wait_for("shutting down");
    let (ok, lines) = bot.wait();
    assert!(ok, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:#?}");
}

#[test]
fn the_example_config_is_valid_and_matches_the_defaults() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../surfaces.example.toml"
    ))
    .expect("read the example");
    let example = surfaces_host::config::Config::parse(&text).expect("the example parses");
    let defaults = surfaces_host::config::Config::parse("").expect("empty parses");
    assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
}
