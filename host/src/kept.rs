//! The guests that served, kept on disk by their file's hash (beside the
//! database), and a record of which one serves: a restart serves what
//! served before it. Without it a restart would read the guest file again,
//! and a file the host rolled back from would serve once more.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which guest serves, by hash, and what the host stepped back from. A
/// restart that finds the guest file still at `refused` or `stepped_back`
/// serves `serving` instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serving {
    pub serving: String,
    /// The file of a guest that failed and was sent back: refused until
    /// it changes.
    #[serde(default)]
    pub refused: Option<String>,
    /// The file of the guest an admin's `rollback` left: not served again
    /// by a restart, but an admin's `reload` takes it.
    #[serde(default)]
    pub stepped_back: Option<String>,
    /// Earlier guests an admin's `rollback` can return to, the latest last.
    #[serde(default)]
    pub earlier: Vec<String>,
}

impl Serving {
    /// Whether a file of this hash was rolled back from.
    pub fn left(&self, hash: &str) -> bool {
        self.refused.as_deref() == Some(hash) || self.stepped_back.as_deref() == Some(hash)
    }
}

/// The directory of kept guests: `{hash}.wasm` and `serving.json`.
#[derive(Clone, Debug)]
pub struct Kept {
    dir: PathBuf,
}

impl Kept {
    pub fn new(dir: impl Into<PathBuf>) -> Kept {
        Kept { dir: dir.into() }
    }

    fn file(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.wasm"))
    }

    /// Keep a guest's bytes (once per hash: a file of another length,
    /// damaged, is written again); returns its hash.
    pub fn keep(&self, wasm: &[u8]) -> io::Result<String> {
        let hash = surfaces_embed::content_hash(wasm);
        self.keep_as(&hash, wasm)?;
        Ok(hash)
    }

    /// The same, for bytes whose hash is known (no hashing on the loop).
    pub fn keep_as(&self, hash: &str, wasm: &[u8]) -> io::Result<()> {
        let file = self.file(hash);
        let kept = std::fs::metadata(&file).is_ok_and(|m| m.len() == wasm.len() as u64);
        if !kept {
            std::fs::create_dir_all(&self.dir)?;
            write_atomically(&file, wasm)?;
        }
        Ok(())
    }

    /// A kept guest's bytes, if they are there and still hash to `hash`.
    pub fn read(&self, hash: &str) -> Option<Vec<u8>> {
        let wasm = std::fs::read(self.file(hash)).ok()?;
        (surfaces_embed::content_hash(&wasm) == hash).then_some(wasm)
    }

    /// What the last run recorded (none on a first start; a record that
    /// does not decode is logged and taken as none: the guest file serves).
    pub fn serving(&self) -> Option<Serving> {
        let path = self.dir.join("serving.json");
        let bytes = std::fs::read(&path).ok()?;
        serde_json::from_slice(&bytes)
            .map_err(|e| tracing::warn!("{} does not decode, ignored: {e}", path.display()))
            .ok()
    }

    /// Record which guest serves, and drop the files of guests no longer
    /// serving nor earlier.
    pub fn record(&self, serving: &Serving) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let json = serde_json::to_vec_pretty(serving).map_err(io::Error::other)?;
        write_atomically(&self.dir.join("serving.json"), &json)?;
        let wanted =
            |hash: &str| serving.serving == hash || serving.earlier.iter().any(|h| h == hash);
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name();
            let Some(hash) = name.to_str().and_then(|n| n.strip_suffix(".wasm")) else {
                continue;
            };
            if !wanted(hash) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// Write beside, then rename: a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_by_hash_records_and_prunes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kept = Kept::new(dir.path().join("guests"));
        assert_eq!(kept.serving(), None);
        let a = kept.keep(b"guest a").expect("keep");
        let b = kept.keep(b"guest b").expect("keep");
        let c = kept.keep(b"guest c").expect("keep");
        assert_eq!(kept.read(&a).as_deref(), Some(&b"guest a"[..]));
        let record = Serving {
            serving: b.clone(),
            refused: Some(c.clone()),
            stepped_back: None,
            earlier: vec![a.clone()],
        };
        kept.record(&record).expect("record");
        assert_eq!(kept.serving(), Some(record.clone()));
        assert!(record.left(&c) && !record.left(&b));
        // c was left: its file goes; a is earlier, b serves.
        assert!(kept.read(&c).is_none());
        assert!(kept.read(&a).is_some() && kept.read(&b).is_some());
        // A damaged file is not taken for the guest it was.
        std::fs::write(dir.path().join("guests").join(format!("{a}.wasm")), b"x").expect("damage");
        assert!(kept.read(&a).is_none());
        std::fs::write(dir.path().join("guests/serving.json"), b"{").expect("damage");
        assert_eq!(kept.serving(), None);
    }
}
