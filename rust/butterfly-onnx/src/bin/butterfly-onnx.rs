//! `butterfly-onnx`: classify images with an exported model, without Python or torch.
//!
//! ```text
//! butterfly-onnx predict MODEL INPUTS... [--top-k 5] [--batch-size 32] [--threads N] [--json]
//!                        [-o FILE.csv|FILE.jsonl] [--progress|--no-progress] [--ort-lib PATH]
//! butterfly-onnx info MODEL [--json] [--ort-lib PATH]
//! (both: [--device cpu|cuda[:N]|... | --provider NAME[:KEY=VALUE,...]...])
//! ```
//! `predict` agrees with the Python command's `predict` (docs/inference.md, "Command line";
//! both are tested on tests/fixtures/cli/predict_cases.json). Exit status: 0 all done; 1 some
//! inputs failed (each named on stderr), the rest written; 2 nothing done (usage error,
//! missing or invalid model, no ONNX Runtime, unreadable data, no images matched).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use butterfly_onnx::classifier::{
    providers, Classifier, ClassifierOptions, ImageInput, ImageResult, Provider, DEFAULT_MAX_IMAGE_PIXELS,
};
use butterfly_onnx::contract::{interpolation_name, resample_order_name};
use butterfly_onnx::runtime;
use clap::{Parser, Subcommand};

/// The one list of image extensions (lowercase, no dot), shared with the Python package.
const IMAGE_EXTENSIONS: &str = include_str!("../../../../python/butterfly_onnx/data/image_extensions.txt");

#[derive(Parser)]
#[command(
    name = "butterfly-onnx",
    version,
    about = "Classify images with a butterfly_onnx model (ONNX Runtime, torchvision-exact preprocessing)",
    after_help = "Exit status: 0 all done, 1 some inputs failed (the rest written), 2 nothing done."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RuntimeArgs {
    /// The libonnxruntime shared library. Default: $BUTTERFLY_ONNX_ORT_LIB, $ORT_DYLIB_PATH,
    /// else the onnxruntime wheel's library in the active virtualenv, ~/.local or the system
    /// site-packages.
    #[arg(long, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// Where the model runs: cpu, cuda[:N], tensorrt[:N], openvino[:DEVICE_TYPE], coreml,
    /// directml[:N] (default: cpu; python/butterfly_onnx/data/providers.json).
    #[arg(long, conflicts_with = "provider")]
    device: Option<String>,
    /// An ONNX Runtime execution provider, in priority order (repeatable), e.g.
    /// CUDAExecutionProvider:device_id=1. Never a fallback: a missing one is an error.
    #[arg(long, value_name = "NAME[:KEY=VALUE,...]")]
    provider: Vec<String>,
}

impl RuntimeArgs {
    /// `ClassifierOptions` with this library and these providers (`--device` or `--provider`).
    fn options(self) -> Result<ClassifierOptions, Fatal> {
        let providers = match (&self.device, self.provider.is_empty()) {
            (Some(device), _) => providers::from_device(device)?,
            (None, false) => self.provider.iter().map(|text| parse_provider(text)).collect::<Result<_, _>>()?,
            (None, true) => providers::cpu(),
        };
        Ok(ClassifierOptions { ort_library: self.ort_lib, providers, ..ClassifierOptions::default() })
    }
}

/// `--provider NAME[:KEY=VALUE,...]` (as the Python command parses it).
fn parse_provider(text: &str) -> Result<Provider, Fatal> {
    let (name, rest) = text.split_once(':').map_or((text, None), |(n, r)| (n, Some(r)));
    let mut options = Vec::new();
    for pair in rest.map(|r| r.split(',').collect::<Vec<_>>()).unwrap_or_default() {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => options.push((key.to_string(), value.to_string())),
            _ => {
                return Err(Fatal::new(format!("--provider '{text}': options are KEY=VALUE pairs separated by commas")))
            }
        }
    }
    Ok(Provider { name: name.to_string(), options })
}

#[derive(Subcommand)]
enum Command {
    /// Print (or write) the top-k classes of each image.
    Predict {
        /// The exported .onnx model.
        model: PathBuf,
        /// Image files, directories (their image files, sorted, not recursive), glob patterns
        /// (sorted), or exactly one Kaggle-style CSV with a `filename` column.
        #[arg(required = true, value_name = "INPUTS")]
        inputs: Vec<String>,
        /// How many classes per image.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        top_k: u32,
        /// Images decoded and held at once (bounds memory, not results).
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
        batch_size: u32,
        /// Threads for decoding and for ONNX Runtime (default: all cores).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        threads: Option<u32>,
        /// JSON Lines on stdout, one object per input.
        #[arg(long)]
        json: bool,
        /// Write .csv or .jsonl here instead of stdout (a Kaggle CSV input + .csv: `filename,label`).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// A progress bar on stderr (default: when stderr is a terminal).
        #[arg(long, overrides_with = "no_progress")]
        progress: bool,
        #[arg(long, overrides_with = "progress")]
        no_progress: bool,
        /// Refuse images with more pixels than this, from the header, before decoding
        /// (0 = no limit). Default: Pillow's decompression-bomb ceiling, as the Python CLI.
        #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_PIXELS)]
        max_image_pixels: u64,
        /// JPEG draft mode: decode JPEGs at a reduced DCT scale as Pillow's draft() does
        /// (faster on large photos, not torchvision-exact).
        #[arg(long)]
        jpeg_draft: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Summarise the model and its contract.
    Info {
        model: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

/// Why nothing was done (exit status 2): one line on stderr. A write to stdout whose reader
/// went away (`| head`) is [`Fatal::is_broken_pipe`]: not an error, the run just stops.
struct Fatal(String, bool);

impl<E: std::fmt::Display + 'static> From<E> for Fatal {
    fn from(error: E) -> Self {
        let any: &dyn std::any::Any = &error;
        let broken = match (any.downcast_ref::<std::io::Error>(), any.downcast_ref::<csv::Error>()) {
            (Some(io), _) => io.kind() == std::io::ErrorKind::BrokenPipe,
            (_, Some(csv)) => {
                matches!(csv.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
            }
            _ => false,
        };
        Fatal(error.to_string(), broken)
    }
}

impl Fatal {
    fn new(message: String) -> Self {
        Fatal(message, false)
    }

    fn is_broken_pipe(&self) -> bool {
        self.1
    }
}

fn report(message: &str) {
    // stderr gone too: nothing left to tell.
    let _ = writeln!(std::io::stderr().lock(), "butterfly-onnx: error: {message}");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help, --version
            let _ = write!(std::io::stdout().lock(), "{error}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let text = error.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            report(line.strip_prefix("error: ").unwrap_or(line));
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Predict {
            model,
            inputs,
            top_k,
            batch_size,
            threads,
            json,
            output,
            progress,
            no_progress,
            max_image_pixels,
            jpeg_draft,
            runtime,
        } => {
            let options = match runtime.options() {
                Ok(options) => ClassifierOptions {
                    threads: threads.map(|t| t as usize),
                    max_image_pixels: Some(match max_image_pixels {
                        0 => butterfly_onnx::classifier::NO_PIXEL_LIMIT,
                        n => n,
                    }),
                    jpeg_draft,
                    ..options
                },
                Err(Fatal(message, _)) => {
                    report(&message);
                    return ExitCode::from(2);
                }
            };
            let show_progress = if progress || no_progress { progress } else { std::io::stderr().is_terminal() };
            let settings =
                PredictSettings { top_k: top_k as usize, batch_size: batch_size as usize, json, output, show_progress };
            predict(&model, &inputs, &settings, options)
        }
        Command::Info { model, json, runtime } => runtime.options().and_then(|options| info(&model, json, options)),
    };
    match outcome {
        Ok(all_ok) => ExitCode::from(if all_ok { 0 } else { 1 }),
        // The reader of stdout has what it wanted.
        Err(fatal) if fatal.is_broken_pipe() => ExitCode::SUCCESS,
        Err(Fatal(message, _)) => {
            report(&message);
            ExitCode::from(2)
        }
    }
}

/// Load ONNX Runtime (--ort-lib, the environment, else the wheel's library found on disk).
fn open(model: &Path, mut options: ClassifierOptions) -> Result<Classifier, Fatal> {
    if !model.exists() {
        // Before looking for ONNX Runtime: the missing model is the first thing to fix.
        return Err(Fatal::new(format!("{}: model file not found", model.display())));
    }
    match runtime::configured_library(options.ort_library.as_deref()) {
        None => {
            options.ort_library =
                Some(runtime::find_wheel_library()?.ok_or_else(|| Fatal::new(runtime::how_to_get_a_library()))?);
        }
        // Named by the user: loaded, but a library others could have written is worth a word.
        Some(named) => {
            if let Some(reason) = runtime::untrusted_reason(&named) {
                let _ = writeln!(std::io::stderr().lock(), "butterfly-onnx: warning: {reason}");
            }
        }
    }
    Ok(Classifier::open(model, options)?)
}

// -- inputs -------------------------------------------------------------------------------

/// What `predict` classifies: images, and for a Kaggle CSV the `filename` of each.
struct Inputs {
    images: Vec<PathBuf>,
    filenames: Option<Vec<String>>,
}

/// A path as Python's `str(Path(text))` writes it: no `.` segments, no doubled or trailing
/// separators (so both CLIs name an input the same way).
fn normalized(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        if component != Component::CurDir {
            out.push(component.as_os_str());
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

fn image_extensions() -> impl Iterator<Item = &'static str> {
    IMAGE_EXTENSIONS.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#'))
}

fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        let lower = e.to_ascii_lowercase();
        image_extensions().any(|known| known == lower)
    })
}

fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

fn expand(inputs: &[String]) -> Result<Inputs, Fatal> {
    let csvs: Vec<&String> = inputs.iter().filter(|i| i.to_ascii_lowercase().ends_with(".csv")).collect();
    if let Some(csv) = csvs.first() {
        if inputs.len() != 1 {
            return Err(Fatal::new(format!("{csv}: a CSV input (a list of images) must be the only input")));
        }
        return read_image_list(Path::new(csv.as_str()));
    }
    let mut images = Vec::new();
    for text in inputs {
        let path = normalized(Path::new(text));
        if path.is_file() {
            images.push(path);
        } else if path.is_dir() {
            let entries = std::fs::read_dir(&path)
                .map_err(|e| Fatal::new(format!("{}: cannot list the directory: {e}", path.display())))?;
            let mut found: Vec<PathBuf> =
                entries.flatten().map(|e| e.path()).filter(|p| has_image_extension(p) && p.is_file()).collect();
            if found.is_empty() {
                let known: Vec<&str> = image_extensions().collect();
                return Err(Fatal::new(format!(
                    "{}: the directory holds no image files ({})",
                    path.display(),
                    known.join(", ")
                )));
            }
            found.sort();
            images.extend(found);
        } else if is_glob(text) {
            // As Python's glob.glob(text, recursive=True): `**` spans folders, `*` skips dotfiles.
            let options = glob::MatchOptions { require_literal_leading_dot: true, ..glob::MatchOptions::new() };
            let pattern =
                glob::glob_with(text, options).map_err(|e| Fatal::new(format!("{text}: not a valid pattern: {e}")))?;
            let mut found: Vec<PathBuf> = pattern.flatten().filter(|p| p.is_file()).map(|p| normalized(&p)).collect();
            if found.is_empty() {
                return Err(Fatal::new(format!("{text}: the pattern matches no file")));
            }
            found.sort();
            images.extend(found);
        } else {
            // A missing file stays an input: it is reported (exit 1) like an unreadable image.
            images.push(path);
        }
    }
    Ok(Inputs { images, filenames: None })
}

/// A Kaggle-style CSV (`Testing_set.csv`): its `filename` column, in order; the images in
/// `<csv folder>/test/` when that folder exists, else next to the CSV. Errors name the CSV
/// (and the line): no such file, not UTF-8, no `filename` column, no rows, or a filename that
/// is empty, absolute, uses `..` or holds a control character. Missing images are listed.
fn read_image_list(csv_path: &Path) -> Result<Inputs, Fatal> {
    let name = csv_path.display();
    let bytes = std::fs::read(csv_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Fatal::new(format!("{name}: no such CSV file")),
        _ => Fatal::new(format!("{name}: cannot read the CSV: {e}")),
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        Fatal::new(format!("{name}, line {line}: not valid UTF-8"))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| Fatal::new(format!("{name}, line 1: not a valid CSV: {e}")))?.clone();
    let column = header.iter().position(|h| h == "filename").ok_or_else(|| {
        let names: Vec<&str> = header.iter().collect();
        Fatal::new(format!("{name}, line 1: missing column(s) ['filename']; the header is {names:?}"))
    })?;
    let folder = {
        let parent = csv_path.parent().unwrap_or(Path::new(""));
        let test = parent.join("test");
        normalized(if test.is_dir() { &test } else { parent })
    };
    let root = resolved(&folder, 40).unwrap_or_else(|| folder.clone());
    let (mut images, mut filenames) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record.map_err(|e| Fatal::new(format!("{name}: not a valid CSV: {e}")))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() > header.len() {
            return Err(Fatal::new(format!(
                "{name}, line {line}: {} fields, the header has {}",
                record.len(),
                header.len()
            )));
        }
        let value = record.get(column).unwrap_or("").trim();
        let posix = value.replace('\\', "/");
        if value.is_empty() {
            return Err(Fatal::new(format!("{name}, line {line}: empty filename")));
        }
        if value.chars().any(|c| (c as u32) < 32) {
            return Err(Fatal::new(format!("{name}, line {line}: filename {value:?} contains a control character")));
        }
        if Path::new(value).is_absolute() || posix.starts_with('/') || posix.chars().nth(1) == Some(':') {
            return Err(Fatal::new(format!(
                "{name}, line {line}: absolute path {value:?} is not allowed (paths are relative to the dataset root)"
            )));
        }
        if posix.split('/').any(|part| part == "..") {
            return Err(Fatal::new(format!(
                "{name}, line {line}: path {value:?} points outside the dataset root ('..')"
            )));
        }
        let image = normalized(&folder.join(&posix));
        // A symlink may still lead outside the folder: as Python's read_image_list, the
        // resolved path must stay inside the resolved folder.
        if !resolved(&image, 40).is_some_and(|real| real.starts_with(&root)) {
            return Err(Fatal::new(format!(
                "{name}, line {line}: {} resolves outside the image folder {}",
                normalized(Path::new(&posix)).display(),
                root.display()
            )));
        }
        images.push(image);
        filenames.push(value.to_string());
    }
    if images.is_empty() {
        return Err(Fatal::new(format!("{name}: no rows after the header")));
    }
    Ok(Inputs { images, filenames: Some(filenames) })
}

/// `path` with its symlinks resolved as Python's `Path.resolve()` (not strict): a missing
/// tail is kept as written, a dangling link is followed to its target. `None` for a symlink
/// loop (more than `depth` links) or a path that cannot be resolved.
fn resolved(path: &Path, depth: usize) -> Option<PathBuf> {
    if let Ok(real) = std::fs::canonicalize(path) {
        return Some(real);
    }
    let absolute = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().ok()?.join(path) };
    if absolute.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
        let target = std::fs::read_link(&absolute).ok()?;
        return resolved(&absolute.parent()?.join(target), depth.checked_sub(1)?);
    }
    let name = absolute.file_name()?;
    Some(resolved(absolute.parent()?, depth)?.join(name))
}

// -- outputs ------------------------------------------------------------------------------

/// A float as Python's `repr(float)` writes it (shortest round trip; scientific below 1e-4
/// and from 1e16, with a two-digit exponent), so both CLIs write the same bytes.
fn py_float(value: f32) -> String {
    let value = value as f64;
    if !value.is_finite() {
        return if value.is_nan() {
            "NaN".into()
        } else if value > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let scientific = format!("{value:e}"); // shortest digits: "9.412000179290771e-1"
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("integer exponent");
    if (-4..16).contains(&exponent) {
        let plain = format!("{value}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// A JSON string as Python's `json.dumps` writes it (ASCII only, `\uXXXX` escapes).
fn py_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The JSON Lines object of one input, as the Python CLI's `json.dumps(prediction.to_dict())`.
fn json_line(result: &ImageResult, top_k: usize) -> String {
    let score = |label: &str, index: usize, probability: f32| {
        format!(
            "{{\"label\": {}, \"index\": {index}, \"probability\": {}}}",
            py_json_string(label),
            py_float(probability)
        )
    };
    let source = py_json_string(&result.source);
    match &result.outcome {
        Ok(top) => {
            let best = &top[0];
            let list: Vec<String> = top.iter().take(top_k).map(|p| score(&p.label, p.index, p.probability)).collect();
            format!(
                "{{\"source\": {source}, \"label\": {}, \"index\": {}, \"probability\": {}, \"top_k\": [{}], \"error\": null}}",
                py_json_string(&best.label),
                best.index,
                py_float(best.probability),
                list.join(", ")
            )
        }
        Err(error) => format!(
            "{{\"source\": {source}, \"label\": null, \"index\": null, \"probability\": null, \"top_k\": [], \"error\": {}}}",
            py_json_string(&error.to_string())
        ),
    }
}

/// Where predictions go.
enum Sink {
    Text(BufWriter<std::io::StdoutLock<'static>>),
    JsonLines(Box<dyn Write>),
    Csv(csv::Writer<File>),
    Submission(csv::Writer<File>),
}

fn csv_writer(path: &Path) -> Result<csv::Writer<File>, Fatal> {
    let file = File::create(path).map_err(|e| Fatal::new(format!("{}: cannot write: {e}", path.display())))?;
    // As Python's csv.writer: minimal quoting, \r\n line ends.
    Ok(csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(file))
}

/// The format of `-o FILE` by its extension: ".csv" or ".jsonl", else a usage error.
/// Checked before any work; the file itself is created only once the model is open.
fn check_output(path: &Path) -> Result<&'static str, Fatal> {
    let suffix = path.extension().map(|e| format!(".{}", e.to_string_lossy().to_lowercase()));
    match suffix.as_deref() {
        Some(".csv") => Ok(".csv"),
        Some(".jsonl") => Ok(".jsonl"),
        other => Err(Fatal::new(format!(
            "{}: unknown output format '{}'; use .csv or .jsonl",
            path.display(),
            other.unwrap_or("(no extension)")
        ))),
    }
}

impl Sink {
    /// The sink for `-o FILE` (by extension; checked before any work) or stdout.
    fn new(output: Option<&Path>, json: bool, kaggle: bool, top_k: usize) -> Result<Sink, Fatal> {
        let Some(path) = output else {
            let stdout = BufWriter::new(std::io::stdout().lock());
            return Ok(if json { Sink::JsonLines(Box::new(stdout)) } else { Sink::Text(stdout) });
        };
        match check_output(path)? {
            ".csv" if kaggle => {
                let mut writer = csv_writer(path)?;
                writer.write_record(["filename", "label"])?;
                Ok(Sink::Submission(writer))
            }
            ".csv" => {
                let mut writer = csv_writer(path)?;
                let mut header: Vec<String> = ["source", "label", "index", "probability"].map(String::from).to_vec();
                for k in 1..=top_k {
                    header.extend([format!("label_{k}"), format!("index_{k}"), format!("probability_{k}")]);
                }
                header.push("error".into());
                writer.write_record(&header)?;
                Ok(Sink::Csv(writer))
            }
            _ => {
                let file =
                    File::create(path).map_err(|e| Fatal::new(format!("{}: cannot write: {e}", path.display())))?;
                Ok(Sink::JsonLines(Box::new(BufWriter::new(file))))
            }
        }
    }

    fn write(&mut self, result: &ImageResult, filename: Option<&str>, top_k: usize) -> Result<(), Fatal> {
        match self {
            Sink::Text(out) => {
                if let Ok(top) = &result.outcome {
                    let scores: String = top.iter().map(|p| format!("\t{} ({:.4})", p.label, p.probability)).collect();
                    writeln!(out, "{}{scores}", result.source)?;
                }
            }
            Sink::JsonLines(out) => writeln!(out, "{}", json_line(result, top_k))?,
            Sink::Csv(writer) => {
                let mut row: Vec<String> = vec![result.source.clone()];
                match &result.outcome {
                    Ok(top) => {
                        row.extend([top[0].label.clone(), top[0].index.to_string(), py_float(top[0].probability)]);
                        for k in 0..top_k {
                            match top.get(k) {
                                Some(p) => row.extend([p.label.clone(), p.index.to_string(), py_float(p.probability)]),
                                None => row.extend([String::new(), String::new(), String::new()]),
                            }
                        }
                        row.push(String::new());
                    }
                    Err(error) => {
                        row.extend(std::iter::repeat_n(String::new(), 3 + 3 * top_k));
                        row.push(error.to_string());
                    }
                }
                writer.write_record(&row)?;
            }
            Sink::Submission(writer) => {
                if let (Ok(top), Some(filename)) = (&result.outcome, filename) {
                    writer.write_record([filename, top[0].label.as_str()])?;
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Fatal> {
        match self {
            Sink::Text(mut out) => out.flush()?,
            Sink::JsonLines(mut out) => out.flush()?,
            Sink::Csv(mut writer) | Sink::Submission(mut writer) => writer.flush()?,
        }
        Ok(())
    }
}

// -- predict ------------------------------------------------------------------------------

struct PredictSettings {
    top_k: usize,
    batch_size: usize,
    json: bool,
    output: Option<PathBuf>,
    show_progress: bool,
}

fn predict(
    model: &Path,
    inputs: &[String],
    settings: &PredictSettings,
    options: ClassifierOptions,
) -> Result<bool, Fatal> {
    let top_k = settings.top_k;
    // Everything that can be refused is checked before the model is loaded.
    let expanded = expand(inputs)?;
    if let Some(path) = &settings.output {
        check_output(path)?;
    }
    let classifier = open(model, options)?;
    // Only now: a run refused above leaves an existing output file as it was.
    let mut sink = Sink::new(settings.output.as_deref(), settings.json, expanded.filenames.is_some(), top_k)?;
    let bar = settings.show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(expanded.images.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix("predict");
        bar
    });
    let count = expanded.images.len();
    let stream =
        classifier.predict_stream(expanded.images.into_iter().map(ImageInput::Path), top_k, settings.batch_size)?;
    let mut failed = 0;
    for result in stream {
        let result = result?;
        if let Err(error) = &result.outcome {
            failed += 1;
            match &bar {
                Some(bar) => bar.suspend(|| report(&error.to_string())),
                None => report(&error.to_string()),
            }
        }
        let filename = expanded.filenames.as_ref().map(|names| names[result.index].as_str());
        match sink.write(&result, filename, top_k) {
            Err(fatal) if fatal.is_broken_pipe() => return Ok(failed == 0), // `| head`: the reader has what it wanted
            other => other?,
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match sink.finish() {
        Err(fatal) if fatal.is_broken_pipe() => return Ok(failed == 0),
        other => other?,
    }
    debug_assert!(failed <= count);
    Ok(failed == 0)
}

fn info(model: &Path, as_json: bool, options: ClassifierOptions) -> Result<bool, Fatal> {
    let classifier = open(model, options)?;
    let mut out = std::io::stdout().lock();
    let contract = classifier.contract();
    if as_json {
        let mut document = contract.to_value();
        document["model"] = serde_json::json!(model.display().to_string());
        document["static_batch"] = serde_json::json!(classifier.static_batch());
        document["providers"] = serde_json::json!(classifier.providers());
        writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?;
        out.flush()?;
        return Ok(true);
    }
    let spec = &contract.preprocess;
    let crop = spec.crop_size;
    writeln!(out, "model:          {}", model.display())?;
    writeln!(out, "schema_version: {}", contract.schema_version)?;
    writeln!(out, "classes:        {}", contract.labels.len())?;
    let shown: Vec<&str> = contract.labels.iter().take(10).map(String::as_str).collect();
    let more =
        if contract.labels.len() > 10 { format!(", ... ({} more)", contract.labels.len() - 10) } else { String::new() };
    writeln!(out, "labels:         {}{more}", shown.join(", "))?;
    let batch = classifier.static_batch().map_or("N".to_string(), |b| b.to_string());
    writeln!(out, "input:          {} [{batch}, 3, {crop}, {crop}] float32", contract.input_name)?;
    writeln!(out, "output:         {} ({})", contract.output_name, contract.output_kind.as_str())?;
    writeln!(
        out,
        "preprocess:     Resize({}, {}{}, {}) -> CenterCrop({crop}) -> ToTensor -> Normalize(mean={:?}, std={:?})",
        spec.resize_size,
        interpolation_name(spec.interpolation),
        spec.max_size.map_or(String::new(), |m| format!(", max_size={m}")),
        resample_order_name(spec.resample_order),
        spec.mean,
        spec.std
    )?;
    writeln!(out, "provenance:     {}", contract.provenance)?;
    writeln!(out, "providers:      {}", classifier.providers().join("+"))?;
    if let Some(library) = runtime::loaded_library() {
        writeln!(out, "onnxruntime:    {}", library.display())?;
    }
    out.flush()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_python_repr_writes_them() {
        // repr(float(numpy.float32(x))) for each x.
        for (value, python) in [
            (0.9412_f32, "0.9412000179290771"),
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e-5, "9.999999747378752e-06"),
            (3.2e-7, "3.199999980552093e-07"),
            (1e17, "9.999999843067494e+16"),
            (0.0001, "9.999999747378752e-05"),
            (0.001, "0.0010000000474974513"),
        ] {
            assert_eq!(py_float(value), python, "{value}");
        }
        assert_eq!(py_json_string("a\"b\\c\u{e9}\n"), "\"a\\\"b\\\\c\\u00e9\\n\"");
    }

    #[test]
    fn paths_are_named_as_python_names_them() {
        assert_eq!(normalized(Path::new("./a//b/./c/")), PathBuf::from("a/b/c"));
        assert_eq!(normalized(Path::new(".")), PathBuf::from("."));
        assert_eq!(normalized(Path::new("/x/../y")), PathBuf::from("/x/../y"));
    }

    #[test]
    fn the_extension_list_is_the_shared_one() {
        let known: Vec<&str> = image_extensions().collect();
        assert!(known.contains(&"jpg") && known.contains(&"png"), "{known:?}");
        assert!(has_image_extension(Path::new("A.JPEG")) && !has_image_extension(Path::new("notes.txt")));
    }
}
