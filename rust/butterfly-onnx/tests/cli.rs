//! The `butterfly-onnx` binary: every golden case of tests/fixtures/cli/predict_cases.json
//! (shared with the Python CLI's tests/test_cli.py) checked against the crate's Classifier,
//! `info`, fatal errors, and finding ONNX Runtime without being told where it is.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use butterfly_onnx::classifier::{Classifier, ClassifierOptions, ImageInput, Prediction};
use serde_json::Value;
use support::{fixture, repo_root, Fixture};

/// The CLI with ONNX Runtime given by the environment and nothing else of it inherited.
fn cli(fx: &Fixture) -> Command {
    let mut command = bare_cli();
    command.env("BUTTERFLY_ONNX_ORT_LIB", &fx.ort_library);
    command
}

/// The CLI with no hint at all of where ONNX Runtime is.
fn bare_cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_butterfly-onnx"));
    for var in ["BUTTERFLY_ONNX_ORT_LIB", "ORT_DYLIB_PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "PYENV_ROOT"] {
        command.env_remove(var);
    }
    command
}

fn run(command: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = command.output().unwrap();
    (status.code().unwrap_or(-1), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

#[test]
fn info_summarises_the_contract() {
    let Some(fx) = fixture() else { return };
    let (code, stdout, stderr) = run(cli(fx).arg("info").arg(fx.path("model.onnx")));
    assert_eq!(code, 0, "{stderr}");
    for needle in [
        "classes:        7",
        "admiral, monarch",
        "[N, 3, 64, 64]",
        "Resize(80, bilinear",
        "CenterCrop(64)",
        "tiny_classifier",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing from:\n{stdout}");
    }
    let (code, stdout, _) = run(cli(fx).args(["info", "--json"]).arg(fx.path("model_static2.onnx")));
    assert_eq!(code, 0);
    let document: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["labels"], fx.reference["labels"]);
    assert_eq!(document["static_batch"], 2);
    assert_eq!(document["preprocess"]["crop_size"], 64);
}

#[test]
fn fatal_errors_exit_2_with_a_clear_message() {
    let Some(fx) = fixture() else { return };
    let cases: [(&[&str], &str, &str); 4] = [
        (&["info", "not_a_model.onnx"], "invalid model", "not_a_model.onnx"),
        (&["info", "model_no_contract.onnx"], "no butterfly_onnx contract", "model_no_contract.onnx"),
        (&["info", "nowhere.onnx"], "model file not found", "nowhere.onnx"),
        (
            &["info", "model.onnx", "--ort-lib", "/nonexistent/libonnxruntime.so.1"],
            "ONNX Runtime unavailable",
            "/nonexistent",
        ),
    ];
    for (args, message, names) in cases {
        let mut command = cli(fx);
        command.current_dir(&fx.dir).args(args);
        let (code, stdout, stderr) = run(&mut command);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(message) && stderr.contains(names), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn onnxruntime_is_found_in_the_active_venv_without_flag() {
    let Some(fx) = fixture() else { return };
    let venv = repo_root().join(".venv");
    let wheel_library = fx.ort_library.canonicalize().unwrap();
    if !wheel_library.starts_with(venv.canonicalize().unwrap_or(venv.clone())) {
        eprintln!("SKIPPED: the fixture's onnxruntime is not the repository's .venv one");
        return;
    }
    // The active venv ($VIRTUAL_ENV), from wherever the command runs; the working directory
    // and the folders above it are never searched (tests/runtime_search.rs).
    for cwd in [repo_root(), std::env::temp_dir()] {
        let (code, stdout, stderr) =
            run(bare_cli().current_dir(&cwd).env("VIRTUAL_ENV", &venv).arg("info").arg(fx.path("model.onnx")));
        assert_eq!(code, 0, "{stderr}");
        let line = stdout.lines().find(|l| l.starts_with("onnxruntime:")).unwrap_or_else(|| panic!("{stdout}"));
        assert_eq!(Path::new(line.trim_start_matches("onnxruntime:").trim()), wheel_library);
    }
    // The scan agrees with the Python package's locator (the fixture's library).
    let found = butterfly_onnx::runtime::find_wheel_library_in(&[venv
        .join("lib")
        .read_dir()
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("site-packages")]);
    assert_eq!(found.map(|p| p.canonicalize().unwrap()), Some(wheel_library));
}

#[test]
fn without_any_onnxruntime_one_line_says_how_to_get_one() {
    let Some(fx) = fixture() else { return };
    // Outside the repository (no .venv above), no HOME: only the system folders remain.
    let nowhere = std::env::temp_dir().join(format!("butterfly-no-ort-{}", std::process::id()));
    std::fs::create_dir_all(&nowhere).unwrap();
    let mut command = bare_cli();
    command.current_dir(&nowhere).env("HOME", &nowhere).arg("info").arg(fx.path("model.onnx"));
    let system = butterfly_onnx::runtime::find_wheel_library_in(
        &["/usr/local/lib", "/usr/lib"]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .flat_map(|e| [e.path().join("site-packages"), e.path().join("dist-packages")])
            .collect::<Vec<_>>(),
    );
    let (code, stdout, stderr) = run(&mut command);
    std::fs::remove_dir_all(&nowhere).ok();
    if system.is_some() {
        eprintln!("SKIPPED: this system has an onnxruntime wheel in its own site-packages");
        return;
    }
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("butterfly-onnx: error:")
            && stderr.contains("--ort-lib")
            && stderr.contains("pip install onnxruntime"),
        "{stderr}"
    );
}

// -- the golden cases ---------------------------------------------------------------------

/// Builds the cases' layout under a fresh `{data}` folder: photos copied from the fixture
/// (JPEGs for .jpg/.jpeg, PNGs for .png, each file another photo), text files, CSVs.
fn build_layout(fx: &Fixture, layout: &serde_json::Map<String, Value>, data: &Path) {
    let images = fx.images();
    let jpegs: Vec<&PathBuf> = images.iter().filter(|p| p.extension().unwrap() == "jpg").collect();
    let pngs: Vec<&PathBuf> = images.iter().filter(|p| p.extension().unwrap() == "png").collect();
    for (number, (relative, kind)) in layout.iter().enumerate() {
        let path = data.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let kind = kind.as_str().unwrap();
        if kind == "photo" {
            let pool = if relative.ends_with(".png") { &pngs } else { &jpegs };
            std::fs::copy(pool[number % pool.len()], &path).unwrap();
        } else if kind == "text" {
            std::fs::write(&path, "not an image").unwrap();
        } else if let Some(spec) = kind.strip_prefix("csv") {
            // csv:a,b (a `filename` column) or csv@COLUMN:a,b
            let (head, rows) = spec.split_once(':').unwrap();
            let column = head.strip_prefix('@').unwrap_or("filename");
            std::fs::write(&path, format!("{column}\n{}\n", rows.split(',').collect::<Vec<_>>().join("\n"))).unwrap();
        } else {
            panic!("unknown layout kind {kind:?}");
        }
    }
}

/// One predicted input as read back from any output format.
struct Row {
    source: String,
    top: Vec<(String, Option<u64>, f64)>,
    error: Option<String>,
}

fn parse_output(format: &str, text: &str, data: &Path, filenames: &[&str], sources: &[String]) -> Vec<Row> {
    match format {
        "text" => text
            .lines()
            .map(|line| {
                let mut fields = line.split('\t');
                let source = fields.next().unwrap().to_string();
                let top = fields
                    .map(|field| {
                        let (label, probability) = field.rsplit_once(" (").unwrap();
                        (label.to_string(), None, probability.trim_end_matches(')').parse().unwrap())
                    })
                    .collect();
                Row { source, top, error: None }
            })
            .collect(),
        "jsonl" => text
            .lines()
            .map(|line| {
                let object: Value = serde_json::from_str(line).unwrap();
                let top: Vec<_> = object["top_k"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        (
                            s["label"].as_str().unwrap().to_string(),
                            s["index"].as_u64(),
                            s["probability"].as_f64().unwrap(),
                        )
                    })
                    .collect();
                if let Some((label, index, probability)) = top.first() {
                    assert_eq!(object["label"].as_str(), Some(label.as_str()));
                    assert_eq!(object["index"].as_u64(), *index);
                    assert_eq!(object["probability"].as_f64(), Some(*probability));
                } else {
                    assert!(object["label"].is_null() && object["index"].is_null() && object["probability"].is_null());
                }
                Row {
                    source: object["source"].as_str().unwrap().to_string(),
                    top,
                    error: object["error"].as_str().map(String::from),
                }
            })
            .collect(),
        "csv" => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
            let k = (header.len() - 5) / 3;
            let mut want =
                vec!["source", "label", "index", "probability"].into_iter().map(String::from).collect::<Vec<_>>();
            for i in 1..=k {
                want.extend([format!("label_{i}"), format!("index_{i}"), format!("probability_{i}")]);
            }
            want.push("error".into());
            assert_eq!(header, want);
            reader
                .records()
                .map(|r| {
                    let r = r.unwrap();
                    let error = Some(r[header.len() - 1].to_string()).filter(|e| !e.is_empty());
                    let top = (0..k)
                        .filter(|i| !r[4 + 3 * i].is_empty())
                        .map(|i| {
                            (
                                r[4 + 3 * i].to_string(),
                                Some(r[5 + 3 * i].parse::<u64>().unwrap()),
                                r[6 + 3 * i].parse::<f64>().unwrap(),
                            )
                        })
                        .collect::<Vec<_>>();
                    if let Some(first) = top.first() {
                        assert_eq!((&r[1], &r[2]), (first.0.as_str(), first.1.unwrap().to_string().as_str()));
                    }
                    Row { source: r[0].to_string(), top, error }
                })
                .collect()
        }
        "submission" => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), ["filename", "label"]);
            let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
            assert_eq!(records.iter().map(|r| r[0].to_string()).collect::<Vec<_>>(), filenames, "submission filenames");
            // A filename stands for its image (the case's `sources`, in the same order).
            records
                .iter()
                .zip(sources)
                .map(|(r, source)| Row {
                    source: source.clone(),
                    top: vec![(r[1].to_string(), None, f64::NAN)],
                    error: None,
                })
                .collect()
        }
        other => panic!("unknown format {other:?} ({})", data.display()),
    }
}

#[test]
fn every_golden_predict_case() {
    let Some(fx) = fixture() else { return };
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/cli/predict_cases.json")).unwrap(),
    )
    .unwrap();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-golden-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let data = root.join("data");
    build_layout(fx, golden["layout"].as_object().unwrap(), &data);
    let model = fx.path("model.onnx");
    let reference =
        Classifier::open(&model, ClassifierOptions { ort_library: Some(fx.ort_library.clone()), ..Default::default() })
            .unwrap();
    let mut expected: HashMap<String, Vec<Prediction>> = HashMap::new();

    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let out = root.join(format!("out-{name}"));
        std::fs::create_dir_all(&out).unwrap();
        let substitute = |text: &str| {
            text.replace("{model}", model.to_str().unwrap())
                .replace("{data}", data.to_str().unwrap())
                .replace("{out}", out.to_str().unwrap())
        };
        let args: Vec<String> =
            case["args"].as_array().unwrap().iter().map(|a| substitute(a.as_str().unwrap())).collect();
        let (code, stdout, stderr) = run(cli(fx).args(&args));
        let context = format!("case {name}: {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert_eq!(code as u64, case["exit"].as_u64().unwrap(), "{context}");
        assert!(!stderr.contains("panicked"), "{context}");
        for line in stderr.lines() {
            assert!(line.starts_with("butterfly-onnx: error: "), "one line per error: {context}");
        }
        for absent in case.get("absent").and_then(Value::as_array).into_iter().flatten() {
            let absent = substitute(absent.as_str().unwrap());
            assert!(!Path::new(&absent).exists(), "{absent} should not exist: {context}");
        }
        let format = case["format"].as_str().unwrap();
        if format == "none" {
            assert!(stdout.is_empty(), "{context}");
            let lines = case.get("stderr_lines").and_then(Value::as_u64).unwrap_or(1) as usize;
            assert_eq!(stderr.lines().count(), lines, "{context}");
            for needle in case["stderr_contains"].as_array().unwrap() {
                assert!(stderr.contains(&substitute(needle.as_str().unwrap())), "{needle} missing: {context}");
            }
            continue;
        }
        let path_of = |relative: &Value| data.join(relative.as_str().unwrap()).to_str().unwrap().to_string();
        let sources: Vec<String> = case["sources"].as_array().unwrap().iter().map(path_of).collect();
        let failed: Vec<String> = case["failed"].as_array().unwrap().iter().map(path_of).collect();
        // Every failed input named on stderr, one line each, and one line per note.
        let notes: Vec<&str> =
            case.get("notes").and_then(Value::as_array).into_iter().flatten().map(|n| n.as_str().unwrap()).collect();
        assert_eq!(stderr.lines().count(), failed.len() + notes.len(), "{context}");
        for note in &notes {
            assert!(stderr.lines().any(|l| l.contains(note)), "{note} not said: {context}");
        }
        for source in &failed {
            assert!(stderr.lines().any(|l| l.contains(source.as_str())), "{source} not reported: {context}");
        }
        let text = match case.get("output") {
            Some(output) => {
                assert!(stdout.is_empty(), "-o: nothing on stdout: {context}");
                std::fs::read_to_string(substitute(output.as_str().unwrap())).unwrap()
            }
            None => stdout.clone(),
        };
        let filenames: Vec<&str> = case
            .get("filenames")
            .map_or(Vec::new(), |f| f.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect());
        let rows = parse_output(format, &text, &data, &filenames, &sources);
        assert_eq!(rows.iter().map(|r| r.source.clone()).collect::<Vec<_>>(), sources, "{context}");
        let top_k = case["top_k"].as_u64().unwrap() as usize;
        for row in &rows {
            if failed.contains(&row.source) {
                if let Some(fill) = case.get("fill").and_then(Value::as_str) {
                    assert_eq!(row.top[0].0, fill, "{context}");
                    continue;
                }
                assert!(row.error.is_some() && row.top.is_empty(), "{} should have failed: {context}", row.source);
                continue;
            }
            assert!(row.error.is_none(), "{context}");
            let want = expected.entry(row.source.clone()).or_insert_with(|| {
                let (mut predictions, errors) = reference.predict(&[ImageInput::path(&row.source)], 7).unwrap();
                assert!(errors.is_empty(), "{errors:?}");
                predictions.remove(0).1
            });
            let shown = if format == "submission" { 1 } else { top_k };
            assert_eq!(row.top.len(), shown, "{context}");
            for ((label, index, probability), want) in row.top.iter().zip(want.iter()) {
                assert_eq!(label, &want.label, "{context}");
                if let Some(index) = index {
                    assert_eq!(*index as usize, want.index, "{context}");
                }
                if !probability.is_nan() {
                    let tolerance = if format == "text" { 5e-5 } else { 1e-5 };
                    assert!((probability - want.probability as f64).abs() <= tolerance, "{context}");
                }
            }
        }
    }
    std::fs::remove_dir_all(&root).ok();
}

/// Both command lines on the same golden cases write the same bytes (the Python one on its
/// rust backend, so the numbers are the same crate's): stdout, the -o file, the error lines
/// and the exit code. Skipped when the Python package's native module is not built.
#[test]
fn the_python_command_writes_the_same_bytes() {
    let Some(fx) = fixture() else { return };
    let probe = Command::new(&fx.python)
        .args(["-c", "import butterfly_onnx._native"])
        .env("PYTHONPATH", repo_root().join("python"))
        .output()
        .unwrap();
    if !probe.status.success() {
        eprintln!("SKIPPED: butterfly_onnx._native is not built for {}", fx.python.display());
        return;
    }
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/cli/predict_cases.json")).unwrap(),
    )
    .unwrap();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-agree-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    let data = root.join("data");
    build_layout(fx, golden["layout"].as_object().unwrap(), &data);
    let model = fx.path("model.onnx");
    let picked = [
        "directory_sorted_not_recursive",
        "bad_image_in_json_lines",
        "csv_output",
        "kaggle_incomplete_goes_to_partial",
        "kaggle_fill_label_completes_the_submission",
        "every_input_failed_output_not_written",
        "filename_column_option",
    ];
    for case in golden["cases"].as_array().unwrap().iter().filter(|c| picked.contains(&c["name"].as_str().unwrap())) {
        let name = case["name"].as_str().unwrap();
        let mut results = Vec::new();
        for which in ["rust", "python"] {
            let out = root.join(format!("out-{name}-{which}"));
            std::fs::create_dir_all(&out).unwrap();
            let substitute = |text: &str| {
                text.replace("{model}", model.to_str().unwrap())
                    .replace("{data}", data.to_str().unwrap())
                    .replace("{out}", out.to_str().unwrap())
            };
            let args: Vec<String> =
                case["args"].as_array().unwrap().iter().map(|a| substitute(a.as_str().unwrap())).collect();
            let mut command = if which == "rust" {
                cli(fx)
            } else {
                let mut python = Command::new(&fx.python);
                python.args(["-m", "butterfly_onnx"]).env("PYTHONPATH", repo_root().join("python"));
                python.env("BUTTERFLY_ONNX_ORT_LIB", &fx.ort_library);
                python
            };
            command.args(&args);
            if which == "python" {
                command.args(["--backend", "rust", "--no-progress"]);
            }
            let (code, stdout, stderr) = run(&mut command);
            let written = case.get("output").map(|o| std::fs::read(substitute(o.as_str().unwrap())).unwrap());
            // Each command writes into its own {out}: named alike in the messages.
            let mut errors: Vec<String> = stderr.lines().map(|l| l.replace(out.to_str().unwrap(), "{out}")).collect();
            errors.sort();
            results.push((code, stdout, written, errors));
        }
        assert_eq!(results[0], results[1], "case {name}: rust vs python command");
    }
    std::fs::remove_dir_all(&root).ok();
}

/// A fresh folder under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("butterfly-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the CLI with stdout a pipe whose reader is already gone (`| head -0`).
fn run_with_closed_stdout(command: &mut Command) -> (i32, String) {
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take()); // the read end, closed before anything is written
    let output = child.wait_with_output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let Some(fx) = fixture() else { return };
    let images: Vec<PathBuf> = fx.images().into_iter().take(3).collect();
    let runs: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["info".into(), fx.path("model.onnx").into()],
        vec!["info".into(), "--json".into(), fx.path("model.onnx").into()],
        [vec!["predict".into(), fx.path("model.onnx").into()], images.iter().map(|p| p.into()).collect()].concat(),
        [
            vec!["predict".into(), "--json".into(), fx.path("model.onnx").into()],
            images.iter().map(|p| p.into()).collect(),
        ]
        .concat(),
    ];
    for args in runs {
        let (code, stderr) = run_with_closed_stdout(cli(fx).args(&args));
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
    // A failed image before the pipe closes still makes it exit 1, quietly about the pipe.
    let missing = fx.dir.join("no_such_image.png");
    let (code, stderr) =
        run_with_closed_stdout(cli(fx).arg("predict").arg(fx.path("model.onnx")).arg(&missing).arg(&images[0]));
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn a_refused_run_leaves_the_output_file_alone() {
    let Some(fx) = fixture() else { return };
    let dir = TempDir::new("keep");
    for name in ["keep.csv", "keep.jsonl"] {
        let keep = dir.path().join(name);
        std::fs::write(&keep, "precious\n").unwrap();
        let mut command = cli(fx);
        command.arg("predict").arg(dir.path().join("missing.onnx")).arg(&fx.images()[0]).arg("-o").arg(&keep);
        let (code, _, stderr) = run(&mut command);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("model file not found"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&keep).unwrap(), "precious\n");
    }
}

#[cfg(unix)]
#[test]
fn a_kaggle_csv_entry_linked_out_of_the_image_folder_is_refused() {
    let Some(fx) = fixture() else { return };
    let dir = TempDir::new("kaggle-link");
    let (data, outside) = (dir.path().join("data"), dir.path().join("outside"));
    std::fs::create_dir_all(data.join("test")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let image = &fx.images()[0];
    std::fs::copy(image, data.join("test").join("inside.png")).unwrap();
    std::fs::copy(image, outside.join("secret.png")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.png"), data.join("test").join("escape.png")).unwrap();
    std::os::unix::fs::symlink(data.join("test").join("inside.png"), data.join("test").join("alias.png")).unwrap();
    let csv = data.join("Testing_set.csv");
    std::fs::write(&csv, "filename\ninside.png\nalias.png\n").unwrap();
    let (code, _, stderr) = run(cli(fx).arg("predict").arg(fx.path("model.onnx")).arg(&csv));
    assert_eq!(code, 0, "a link inside the folder is fine: {stderr}");
    std::fs::write(&csv, "filename\ninside.png\nescape.png\n").unwrap();
    let (code, stdout, stderr) = run(cli(fx).arg("predict").arg(fx.path("model.onnx")).arg(&csv));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("line 3: escape.png resolves outside the image folder") && stderr.contains("Testing_set.csv"),
        "{stderr}"
    );
}

#[test]
fn predict_with_a_fallback_model_gives_its_answers_on_the_near_ties() {
    let Some(fx) = fixture() else { return };
    // The top-1 probability of each image as Python's Classifier(fallback_model=) answers it.
    let expected: Vec<f32> = fx.reference["fallback"]["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let row: Vec<f32> = row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            butterfly_onnx::classifier::softmax(&row).into_iter().fold(0.0, f32::max)
        })
        .collect();
    let images: Vec<PathBuf> = fx.images();
    let top1 = |fallback: &[&str]| -> Vec<f32> {
        let (code, stdout, stderr) = run(cli(fx)
            .args(["predict", "--json", "--no-progress"])
            .args(fallback)
            .arg(fx.path("model_variant.onnx"))
            .args(&images));
        assert_eq!(code, 0, "{stderr}");
        stdout
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["probability"].as_f64().unwrap() as f32)
            .collect()
    };
    let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5);
    let model = fx.path("model.onnx");
    let answered = top1(&["--fallback-model", model.to_str().unwrap()]);
    assert!(close(&answered, &expected), "{answered:?} vs {expected:?}");
    assert!(!close(&top1(&[]), &expected), "the fixture's near-ties change the outputs");

    let (code, _, stderr) = run(cli(fx).args(["predict", "m.onnx", "x.jpg", "--fallback-margin", "0.5"]));
    assert_eq!((code, stderr.as_str()), (2, "butterfly-onnx: error: --fallback-margin needs --fallback-model\n"));
}
