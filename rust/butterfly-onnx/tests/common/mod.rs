//! The Pillow/torchvision reference corpus (tests/make_pillow_refs.py), generated once per
//! version of the script, or taken from `$BUTTERFLY_ONNX_PILLOW_REFS` when that is set.
//! The generator needs Pillow, numpy, torch and torchvision: `$BUTTERFLY_ONNX_PYTHON`, else the
//! repository's `.venv/bin/python`, else `python3`. A missing package fails the tests loudly.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Corpus {
    pub dir: PathBuf,
    pub manifest: serde_json::Value,
}

impl Corpus {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("{}: {e}", self.path(name).display()))
    }

    pub fn list(&self, key: &str) -> &Vec<serde_json::Value> {
        self.manifest[key].as_array().expect("manifest list")
    }

    /// The Pillow version that made the corpus decides the resample order to reproduce.
    pub fn pillow_order(&self) -> butterfly_onnx::preprocess::ResampleOrder {
        butterfly_onnx::contract::resample_order_for_pillow(self.manifest["pillow"].as_str().unwrap())
    }
}

const SCRIPT: &str = include_str!("../make_pillow_refs.py");

pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BUTTERFLY_ONNX_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

fn generate(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/make_pillow_refs.py");
    let py = python();
    let out = Command::new(&py)
        .arg(&script)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} to build the Pillow reference corpus: {e}", py.display()));
    assert!(
        out.status.success(),
        "{} {} failed (it needs Pillow, numpy, torch, torchvision; set BUTTERFLY_ONNX_PYTHON):\n{}",
        py.display(),
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Corpora of earlier script versions (a few hundred MB each) beside `current`.
fn remove_stale_corpora(current: &Path) {
    if std::env::var_os("BUTTERFLY_ONNX_PILLOW_REFS").is_some() {
        return;
    }
    let Some(parent) = current.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let is_corpus = name.to_string_lossy().starts_with("pillow-refs-") && !name.to_string_lossy().contains(".tmp");
        if is_corpus && path != current {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

pub fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = match std::env::var_os("BUTTERFLY_ONNX_PILLOW_REFS") {
            Some(d) => PathBuf::from(d),
            None => {
                // One directory per script version, so an edited script regenerates.
                let hash =
                    SCRIPT.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
                Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pillow-refs-{hash:016x}"))
            }
        };
        let manifest_path = dir.join("manifest.json");
        if !manifest_path.exists() {
            // Generate beside, then rename: concurrent test binaries never see half a corpus.
            let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            generate(&tmp);
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            remove_stale_corpora(&dir);
        }
        let text =
            std::fs::read_to_string(&manifest_path).unwrap_or_else(|e| panic!("{}: {e}", manifest_path.display()));
        Corpus { dir, manifest: serde_json::from_str(&text).expect("manifest.json") }
    })
}

/// Where two byte buffers differ: (count, first index, max abs difference).
pub fn byte_diff(a: &[u8], b: &[u8]) -> (usize, Option<usize>, u8) {
    let mut count = 0;
    let mut first = None;
    let mut max = 0;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            count += 1;
            first.get_or_insert(i);
            max = max.max(x.abs_diff(*y));
        }
    }
    (count, first, max)
}
