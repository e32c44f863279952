//! A real Synapse for end-to-end tests: installed from PyPI into a cached
//! venv (`tests/synapse/install.sh`), started on a free loopback port in a
//! temporary directory with SQLite, users registered with the shared
//! secret. Dropping it stops the server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start may take (a cold venv on a loaded machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What to change in the homeserver's defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Lift the message, login and registration rate limits (as the
    /// matrix-rust-sdk test setup does). Off: Synapse's defaults, e.g.
    /// `rc_message` 0.2/s with a burst of 10.
    pub relax_rate_limits: bool,
    /// Local joins per second, with a burst of one: a join right after
    /// another is refused with 429 for `1 / rate` seconds.
    pub join_rate: Option<f64>,
}

pub struct Synapse {
    child: Child,
    dir: tempfile::TempDir,
    venv: PathBuf,
    port: u16,
    secret: String,
}

impl Synapse {
    /// Install (once) and start a homeserver named `localhost`.
    pub fn start(options: Options) -> Synapse {
        let venv = install();
        let dir = tempfile::tempdir().expect("a temp dir for Synapse");
        let port = free_port();
        let secret = format!("surfaces-test-{port}-{}", std::process::id());
        let config = dir.path().join("homeserver.yaml");
        std::fs::write(&config, homeserver_yaml(dir.path(), port, &secret, options))
            .expect("write homeserver.yaml");
        let python = venv.join("bin/python");
        let keys = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(&config)
            .arg("--generate-keys")
            .output()
            .expect("run Synapse to generate its keys");
        assert!(
            keys.status.success(),
            "Synapse could not generate its keys: {}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let child = spawn(&python, &config, dir.path());
        let mut synapse = Synapse {
            child,
            dir,
            venv,
            port,
            secret,
        };
        synapse.wait_until_up();
        synapse
    }

    /// Stop the server (SIGKILL, as a crash) and start it again on the same
    /// port and database; returns once it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stop the server (SIGKILL, as a crash); [`Synapse::start_again`]
    /// brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start the stopped server on the same port and database; returns once
    /// it answers.
    pub fn start_again(&mut self) {
        let config = self.dir.path().join("homeserver.yaml");
        self.child = spawn(&self.venv.join("bin/python"), &config, self.dir.path());
        self.wait_until_up();
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn server_name(&self) -> &'static str {
        "localhost"
    }

    /// Register `@name:localhost` with the shared secret.
    pub fn register(&self, name: &str, password: &str, admin: bool) {
        let out = Command::new(self.venv.join("bin/register_new_matrix_user"))
            .args(["-u", name, "-p", password, "-k", &self.secret])
            .arg(if admin { "--admin" } else { "--no-admin" })
            .arg(self.url())
            .output()
            .expect("run register_new_matrix_user");
        assert!(
            out.status.success(),
            "registering {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A plain HTTP/1.0 request to the client API: (status, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(self.port, method, path, body, None).expect("Synapse answers")
    }

    /// The same, with an access token.
    pub fn request_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        http(self.port, method, path, body, Some(token)).expect("Synapse answers")
    }

    /// Synapse's own log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, _)) = http(self.port, "GET", "/_matrix/client/versions", None, None) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Synapse exited ({status}) while starting:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "Synapse did not answer within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            // Polling a readiness endpoint: the server gives no other signal.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(python: &Path, config: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .expect("log file");
    Command::new(python)
        .args(["-m", "synapse.app.homeserver", "--config-path"])
        .arg(config)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start Synapse")
}

/// The venv with Synapse, installed by `tests/synapse/install.sh` if missing.
fn install() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("synapse/install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/synapse/install.sh");
    assert!(
        out.status.success(),
        "installing Synapse from PyPI failed (python3 with venv and pip is needed)"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn homeserver_yaml(dir: &Path, port: u16, secret: &str, options: Options) -> String {
    let d = dir.display();
    let mut yaml = format!(
        r#"server_name: "localhost"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "{d}/homeserver.db"
media_store_path: "{d}/media"
signing_key_path: "{d}/signing.key"
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
enable_registration: false
registration_shared_secret: "{secret}"
macaroon_secret_key: "{secret}-macaroon"
form_secret: "{secret}-form"
# Quick password hashing: tests register and log in often.
bcrypt_rounds: 4
"#
    );
    if options.relax_rate_limits {
        yaml.push_str(
            r#"rc_message:
  per_second: 1000
  burst_count: 1000
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_registration:
  per_second: 1000
  burst_count: 1000
rc_invites:
  per_room: {per_second: 1000, burst_count: 1000}
  per_user: {per_second: 1000, burst_count: 1000}
"#,
        );
    }
    let joins = match options.join_rate {
        Some(rate) => Some(format!("{rate}, burst_count: 1")),
        None if options.relax_rate_limits => Some("1000, burst_count: 1000".to_string()),
        None => None,
    };
    if let Some(joins) = joins {
        yaml.push_str(&format!(
            "rc_joins:\n  local: {{per_second: {joins}}}\n  remote: {{per_second: 1000, burst_count: 1000}}\n"
        ));
    }
    yaml
}

/// A plain HTTP/1.0 request to a loopback port: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    // HTTP/1.0: the answer ends with the connection, never chunked.
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:.80}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
