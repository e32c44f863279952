//! The bot's Matrix account: log in once, keep the session, restore it.
//!
//! Everything lives in `<data_dir>/matrix/`: `session.json` (homeserver,
//! user, device id, access token; readable by the owner only) and `store/`
//! (matrix-sdk's SQLite state and crypto stores). The first start logs in
//! with the password (or adopts the access token and its device); later
//! starts restore the saved session, so the device id, the crypto identity
//! and the transaction-id namespace stay the same across restarts.

use std::path::{Path, PathBuf};

use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::encryption::{BackupDownloadStrategy, EncryptionSettings};
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::{OwnedDeviceId, OwnedUserId};
use matrix_sdk::{Client, SessionMeta, SessionTokens};
use serde::{Deserialize, Serialize};

use crate::config::{MatrixConfig, Secret};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Config(String),
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a saved session: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot set up the Matrix client: {0}")]
    Client(String),
    #[error("login to {homeserver} as {user} failed: {message}")]
    Login {
        homeserver: String,
        user: String,
        message: String,
    },
    #[error(
        "the saved session for {user} was rejected by the homeserver ({message}): it was \
         logged out. Remove {dir} to log in again (the bot gets a new device)"
    )]
    LoggedOut {
        user: String,
        dir: PathBuf,
        message: String,
    },
    #[error("cannot reach {homeserver}: {message}")]
    Unreachable { homeserver: String, message: String },
    #[error(
        "{dir} is in use by another surfaces process (the bot, or `surfaces recovery`): stop it \
         first; two on one store would corrupt its keys"
    )]
    InUse { dir: PathBuf },
}

/// Held while a process uses the session directory: one at a time.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] std::fs::File);

/// Take `dir`'s lock (released when the process ends, however it ends).
fn lock(dir: &Path) -> Result<DirLock, SessionError> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SessionError::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(SessionError::InUse {
            dir: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(SessionError::Io { path, source }),
    }
}

/// What `session.json` holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    homeserver: String,
    #[serde(flatten)]
    session: MatrixSession,
}

/// A logged-in client, its store in `dir`, and the lock that keeps other
/// processes out of that store while it is held.
pub async fn connect(cfg: &MatrixConfig, dir: &Path) -> Result<(Client, DirLock), SessionError> {
    let homeserver = cfg
        .homeserver
        .clone()
        .ok_or_else(|| SessionError::Config("no matrix.homeserver configured".into()))?;
    let user = cfg.user.clone().unwrap_or_default();
    std::fs::create_dir_all(dir).map_err(|source| SessionError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let dir_lock = lock(dir)?;
    let session_path = dir.join("session.json");
    let store = dir.join("store");
    let saved = read_saved(&session_path)?;
    if let Some(saved) = &saved {
        if saved.homeserver != homeserver {
            return Err(SessionError::Config(format!(
                "{} is a session on {}, not {homeserver}: remove {} to log in there",
                session_path.display(),
                saved.homeserver,
                dir.display()
            )));
        }
        if !same_user(saved.session.meta.user_id.as_str(), &user) {
            return Err(SessionError::Config(format!(
                "{} is a session of {}, not {user}: remove {} to log in as {user}",
                session_path.display(),
                saved.session.meta.user_id,
                dir.display()
            )));
        }
    } else if store.exists() {
        // A login that never finished (no session saved): its store holds
        // no identity anyone knows, and a login into it would be refused.
        std::fs::remove_dir_all(&store).map_err(|source| SessionError::Io {
            path: store.clone(),
            source,
        })?;
    }
    let client = Client::builder()
        .homeserver_url(&homeserver)
        .sqlite_store(&store, cfg.store_passphrase.as_ref().map(Secret::expose))
        .with_encryption_settings(EncryptionSettings {
            // Cross-signs the bot's device so other users' clients can
            // verify it by its user identity.
            auto_enable_cross_signing: true,
            // Once recovery gives this device the backup key (a lost store
            // taken back), every room key of earlier devices comes back.
            backup_download_strategy: BackupDownloadStrategy::OneShot,
            ..EncryptionSettings::default()
        })
        .build()
        .await
        .map_err(|e| SessionError::Client(e.to_string()))?;
    let login_failed = |message: String| SessionError::Login {
        homeserver: homeserver.clone(),
        user: user.clone(),
        message,
    };
    match saved {
        Some(saved) => {
            client
                .restore_session(saved.session)
                .await
                .map_err(|e| SessionError::Client(e.to_string()))?;
        }
        None => {
            let session = if let Some(password) = &cfg.password {
                client
                    .matrix_auth()
                    .login_username(&user, password.expose())
                    .initial_device_display_name(&cfg.device_name)
                    .send()
                    .await
                    .map_err(|e| login_failed(e.to_string()))?;
                client
                    .matrix_auth()
                    .session()
                    .ok_or_else(|| login_failed("no session after login".into()))?
            } else if let Some(token) = &cfg.access_token {
                let (user_id, device_id) =
                    whoami(&homeserver, token).await.map_err(login_failed)?;
                let session = MatrixSession {
                    meta: SessionMeta { user_id, device_id },
                    tokens: SessionTokens {
                        access_token: token.expose().to_string(),
                        refresh_token: None,
                    },
                };
                client
                    .restore_session(session.clone())
                    .await
                    .map_err(|e| login_failed(e.to_string()))?;
                session
            } else {
                return Err(SessionError::Config(format!(
                    "no saved session in {} and no matrix.password or matrix.access_token \
                     (MATRIX_PASSWORD, MATRIX_ACCESS_TOKEN) to log in with",
                    dir.display()
                )));
            };
            write_saved(
                &session_path,
                &Saved {
                    homeserver: homeserver.clone(),
                    session,
                },
            )?;
            tracing::info!(device = %client.device_id().map(|d| d.to_string()).unwrap_or_default(),
                "logged in; session saved in {}", session_path.display());
        }
    }
    // Prove the token before anything else uses it.
    if let Err(e) = client.whoami().await {
        let user = client.user_id().map(|u| u.to_string()).unwrap_or(user);
        return Err(match e.client_api_error_kind() {
            Some(ErrorKind::UnknownToken { .. }) => SessionError::LoggedOut {
                user,
                dir: dir.to_owned(),
                message: e.to_string(),
            },
            _ => SessionError::Unreachable {
                homeserver,
                message: e.to_string(),
            },
        });
    }
    Ok((client, dir_lock))
}

/// `@name:server` or `name` for the same account.
fn same_user(saved: &str, configured: &str) -> bool {
    saved == configured
        || saved
            .strip_prefix('@')
            .and_then(|s| s.split_once(':'))
            .is_some_and(|(local, _)| local == configured.trim_start_matches('@'))
}

fn read_saved(path: &Path) -> Result<Option<Saved>, SessionError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SessionError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| SessionError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Written to a temporary file and renamed: a crash leaves the old file or
/// the new one, never half of one. Owner-only: it holds the access token.
fn write_saved(path: &Path, saved: &Saved) -> Result<(), SessionError> {
    use std::io::Write;
    let io = |source| SessionError::Io {
        path: path.to_owned(),
        source,
    };
    let text = serde_json::to_vec_pretty(saved).map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(&text).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The user and device an access token belongs to.
async fn whoami(homeserver: &str, token: &Secret) -> Result<(OwnedUserId, OwnedDeviceId), String> {
    #[derive(Deserialize)]
    struct WhoAmI {
        user_id: OwnedUserId,
        device_id: Option<OwnedDeviceId>,
    }
    let url = format!(
        "{}/_matrix/client/v3/account/whoami",
        homeserver.trim_end_matches('/')
    );
    let response = matrix_sdk::reqwest::Client::new()
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("the access token was refused ({status}): {body}"));
    }
    let who: WhoAmI = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let device = who.device_id.ok_or_else(|| {
        "the access token has no device; end-to-end encryption needs one (log in with a \
         password instead)"
            .to_string()
    })?;
    Ok((who.user_id, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_compare_by_id_or_localpart() {
        assert!(same_user("@bot:home.org", "@bot:home.org"));
        assert!(same_user("@bot:home.org", "bot"));
        assert!(same_user("@bot:home.org", "@bot"));
        assert!(!same_user("@bot:home.org", "other"));
        assert!(!same_user("@bot:home.org", "@bot:other.org"));
    }

    #[test]
    fn the_saved_session_round_trips_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("session.json");
        let saved = Saved {
            homeserver: "http://127.0.0.1:8008".into(),
            session: MatrixSession {
                meta: SessionMeta {
                    user_id: "@bot:home.org".try_into().expect("user id"),
                    device_id: "DEVICE".into(),
                },
                tokens: SessionTokens {
                    access_token: "secret".into(),
                    refresh_token: None,
                },
            },
        };
        write_saved(&path, &saved).expect("write");
        let back = read_saved(&path).expect("read").expect("present");
        assert_eq!(back.session, saved.session);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "{").expect("write");
        assert!(matches!(
            read_saved(&path),
            Err(SessionError::Corrupt { .. })
        ));
    }
}
