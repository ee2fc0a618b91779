//! Shared by the integration tests: the fixture that support/make_fixture.py builds (a small
//! contract model, real photos, bad files and the torchvision + onnxruntime reference).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Fixture {
    pub dir: PathBuf,
    /// libonnxruntime of the Python environment's onnxruntime wheel.
    pub ort_library: PathBuf,
    pub reference: serde_json::Value,
    /// torchvision's preprocessed batch of the reference images.
    pub reference_batch: Vec<f32>,
    pub python: PathBuf,
}

impl Fixture {
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// The reference images, in the sorted order a directory expands to.
    pub fn images(&self) -> Vec<PathBuf> {
        self.reference["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| self.dir.join(i["source"].as_str().unwrap()))
            .collect()
    }

    pub fn reference_logits(&self) -> Vec<Vec<f32>> {
        self.reference["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
            .collect()
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `$BUTTERFLY_ONNX_PYTHON`, else the repository's .venv, else `python3`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("BUTTERFLY_ONNX_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Built once per test binary into cargo's per-target temp folder (`None` = skip: the
/// Python environment lacks torch/torchvision/onnx/onnxruntime).
pub fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(build).as_ref()
}

fn build() -> Option<Fixture> {
    use std::hash::{Hash, Hasher};
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/make_fixture.py");
    // Shared by the test binaries of one build: keyed by the script's content, written to a
    // scratch folder and renamed into place once complete.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(&script).unwrap().hash(&mut hasher);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("butterfly-fixture-{:016x}", hasher.finish()));
    let scratch = dir.with_extension(format!("tmp{}", std::process::id()));
    let python = python();
    if !dir.join("reference.json").is_file() {
        let output = Command::new(&python)
            .arg(&script)
            .arg(&scratch)
            .env("PYTHONPATH", repo_root().join("python"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() == Some(77) && std::env::var_os("BUTTERFLY_ONNX_REQUIRE_RUST").is_none() {
            eprintln!("SKIPPED: {stderr}");
            return None;
        }
        assert!(output.status.success(), "make_fixture.py failed:\n{stderr}");
        // Another test binary may have won the race; either copy is complete.
        if std::fs::rename(&scratch, &dir).is_err() {
            std::fs::remove_dir_all(&scratch).ok();
        }
        // Fixtures of older script versions are never read again.
        for entry in std::fs::read_dir(dir.parent().unwrap()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("butterfly-fixture-") && !name.contains('.') && entry.path() != dir {
                std::fs::remove_dir_all(entry.path()).ok();
            }
        }
    }
    // Found by the Python package (the one Python locator), written by make_fixture.py.
    let ort_library = PathBuf::from(std::fs::read_to_string(dir.join("ort_library.txt")).unwrap().trim());
    let reference = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let reference_batch = std::fs::read(dir.join("reference_batch.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Some(Fixture { dir, ort_library, reference, reference_batch, python })
}
