//! `butterfly-onnx`: classify images with an exported model, without Python or torch.
//!
//! ```text
//! butterfly-onnx predict MODEL INPUTS... [--top-k 5] [--batch-size 32] [--threads N] [--json]
//!                        [-o FILE.csv|FILE.jsonl] [--progress|--no-progress] [--ort-lib PATH]
//! butterfly-onnx info MODEL [--json] [--ort-lib PATH]
//! butterfly-onnx serve MODEL [--host 127.0.0.1] [--port 8000] [--name NAME] [--max-batch 16]
//!                      [--max-wait-ms 2] [--max-queue 64] [--max-body-bytes N] [--threads N]
//! (all: [--device cpu|cuda[:N]|... | --provider NAME[:KEY=VALUE,...]...])
//! ```
//! `predict` agrees with the Python command's `predict` (docs/inference.md, "Command line";
//! both are tested on tests/fixtures/cli/predict_cases.json). Exit status: 0 all done; 1 some
//! inputs failed (each named on stderr), the rest written; 2 nothing done (usage error,
//! missing or invalid model, no ONNX Runtime, unreadable data, no images matched).

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use butterfly_onnx::atomic::AtomicFile;
use butterfly_onnx::classifier::{
    providers, Classifier, ClassifierOptions, ImageInput, ImageResult, Provider, DEFAULT_MAX_IMAGE_PIXELS,
};
use butterfly_onnx::runtime;
use clap::{CommandFactory, Parser, Subcommand};

/// The one list of image extensions (lowercase, no dot), shared with the Python package.
const IMAGE_EXTENSIONS: &str = include_str!("../../data/image_extensions.txt");

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

/// `--top-k`, `--batch-size`, `--threads`: a positive integer, refused as the Python CLI
/// refuses it (`--NAME must be a positive integer, got '-1'`).
fn positive(name: &'static str) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync + 'static {
    move |text: &str| match text.trim().parse::<i64>() {
        Ok(value) if value >= 1 && value <= u32::MAX as i64 => Ok(value as u32),
        _ => Err(format!("--{name} must be a positive integer, got '{text}'")),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print (or write) the top-k classes of each image.
    Predict {
        /// The exported .onnx model.
        model: PathBuf,
        /// Image files, directories (their image files, sorted, not recursive), glob patterns
        /// (sorted), or exactly one Kaggle-style CSV (Testing_set.csv: only a CSV input makes a
        /// submission).
        #[arg(required = true, value_name = "INPUTS")]
        inputs: Vec<String>,
        /// How many classes per image.
        #[arg(long, default_value_t = 5, value_parser = positive("top-k"), allow_hyphen_values = true)]
        top_k: u32,
        /// Images decoded and held at once; bounds memory, not results.
        #[arg(long, default_value_t = 32, value_parser = positive("batch-size"), allow_hyphen_values = true)]
        batch_size: u32,
        /// Threads for decoding and inference [default: all cores].
        #[arg(long, value_parser = positive("threads"), allow_hyphen_values = true)]
        threads: Option<u32>,
        /// JSON Lines on stdout, one object per input.
        #[arg(long)]
        json: bool,
        /// Write .csv or .jsonl here instead of stdout, atomically (a CSV input + .csv: a Kaggle
        /// submission filename,label; its folder must exist).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// The column of a CSV input that names the images.
        #[arg(long, default_value = "filename", value_name = "FILENAME_COLUMN")]
        filename_column: String,
        /// A CSV input + -o X.csv: give images that failed this label, so the submission has
        /// every row [default: X.csv is not written, the predictions made go to X.partial.csv].
        #[arg(long, value_name = "LABEL")]
        fill_label: Option<String>,
        /// A progress bar on stderr [default: when stderr is a terminal].
        #[arg(long, overrides_with = "no_progress")]
        progress: bool,
        /// No progress bar.
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
        fallback: FallbackArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Serve the model over HTTP (Open Inference Protocol v2, /v1/classify, /metrics;
    /// docs/serving.md) until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Summarise the model and its contract.
    Info {
        /// The exported .onnx model.
        model: PathBuf,
        /// The contract as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

/// The near-tie fallback of `predict` and `serve` (docs/inference.md, "Near-tie fallback").
#[derive(clap::Args)]
struct FallbackArgs {
    /// Run images whose two best classes are closer than the margin again on this model (the
    /// fp32 file of an int8 MODEL) and give its answer.
    #[arg(long, value_name = "FP32.onnx")]
    fallback_model: Option<PathBuf>,
    /// The margin for --fallback-model [default: the one the int8 file records].
    #[arg(long, value_name = "X", allow_hyphen_values = true)]
    fallback_margin: Option<f64>,
}

impl FallbackArgs {
    /// `--fallback-margin` without `--fallback-model` is refused before anything loads.
    fn check(&self) -> Result<(), Fatal> {
        if self.fallback_margin.is_some() && self.fallback_model.is_none() {
            return Err(Fatal::new("--fallback-margin needs --fallback-model".to_string()));
        }
        Ok(())
    }

    /// `model` opened, answering its near-ties with `--fallback-model` when given. In the
    /// Python `Classifier`'s order: both files must exist (the model checked first), then the
    /// fallback loads, then the model.
    fn open(&self, model: &Path, options: ClassifierOptions) -> Result<Classifier, Fatal> {
        let Some(fallback) = &self.fallback_model else {
            return open(model, options);
        };
        require_model_file(model)?;
        require_model_file(fallback)?;
        let fallback = open(fallback, options.clone())?;
        Ok(open(model, options)?.with_fallback(fallback, self.fallback_margin)?)
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The exported .onnx model.
    model: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0: any free one; the line printed on start says which).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model's name in /v2/models/NAME (default: the file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Images per model batch across requests (and per request).
    #[arg(long, default_value_t = butterfly_onnx::serve::DEFAULT_MAX_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_batch: u32,
    /// How long a batch waits to fill, in milliseconds.
    #[arg(long, default_value_t = butterfly_onnx::serve::DEFAULT_MAX_WAIT_MS)]
    max_wait_ms: u64,
    /// Requests admitted at once; past it, 503 with Retry-After.
    #[arg(long, default_value_t = butterfly_onnx::serve::DEFAULT_MAX_QUEUE as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_queue: u32,
    /// Largest request body, in bytes; past it, 413.
    #[arg(long, default_value_t = butterfly_onnx::serve::DEFAULT_MAX_BODY_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..))]
    max_body_bytes: u64,
    /// Threads for decoding and for ONNX Runtime (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Refuse images with more pixels (0 = no limit); Pillow's bomb limit by default.
    #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_PIXELS)]
    max_image_pixels: u64,
    #[command(flatten)]
    fallback: FallbackArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// `serve`: open the model, serve until SIGTERM / Ctrl-C.
fn serve(args: ServeArgs) -> Result<bool, Fatal> {
    let options = ClassifierOptions {
        threads: args.threads.map(|t| t as usize),
        max_image_pixels: Some(match args.max_image_pixels {
            0 => butterfly_onnx::classifier::NO_PIXEL_LIMIT,
            n => n,
        }),
        ..args.runtime.options()?
    };
    args.fallback.check()?;
    let classifier = std::sync::Arc::new(args.fallback.open(&args.model, options)?);
    let settings = butterfly_onnx::serve::ServeOptions {
        host: args.host,
        port: args.port,
        name: args.name,
        max_batch: args.max_batch as usize,
        max_wait: std::time::Duration::from_millis(args.max_wait_ms),
        max_queue: args.max_queue as usize,
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
    };
    butterfly_onnx::serve::serve(classifier, settings)?;
    Ok(true)
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

/// A clap error phrased as the Python CLI (argparse) phrases it, with its pointer to --help.
fn usage_message(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let command = std::env::args().nth(1).filter(|a| a == "predict" || a == "info");
    let help = command.map_or("butterfly-onnx".to_string(), |c| format!("butterfly-onnx {c}"));
    let context = |kind: ContextKind| match error.get(kind) {
        Some(ContextValue::String(text)) => text.clone(),
        Some(ContextValue::Strings(texts)) => texts.join(" "),
        _ => String::new(),
    };
    let option = || context(ContextKind::InvalidArg).split([' ', '=']).next().unwrap_or("").to_string();
    let mut help = help;
    let text = match error.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let reason = std::error::Error::source(error).map(|e| e.to_string());
            match reason {
                Some(reason) => format!("argument {}: {reason}", option()),
                None => format!("argument {}: invalid value '{}'", option(), context(ContextKind::InvalidValue)),
            }
        }
        ErrorKind::UnknownArgument => {
            help = "butterfly-onnx".into(); // argparse reports these from the top-level parser
            format!("unrecognized arguments: {}", context(ContextKind::InvalidArg))
        }
        ErrorKind::InvalidSubcommand => {
            let names: Vec<String> = Cli::command().get_subcommands().map(|c| format!("'{}'", c.get_name())).collect();
            format!(
                "argument command: invalid choice: '{}' (choose from {})",
                context(ContextKind::InvalidSubcommand),
                names.join(", ")
            )
        }
        ErrorKind::MissingRequiredArgument => {
            let names: Vec<String> = match error.get(ContextKind::InvalidArg) {
                Some(ContextValue::Strings(names)) => names.clone(),
                _ => Vec::new(),
            };
            let names: Vec<String> = names
                .iter()
                .map(|n| {
                    let bare = n.trim_end_matches("...").trim_start_matches('<').trim_end_matches('>');
                    if bare == "MODEL" {
                        "model".to_string()
                    } else {
                        bare.to_string()
                    }
                })
                .collect();
            format!("the following arguments are required: {}", names.join(", "))
        }
        _ => {
            let full = error.to_string();
            let line = full.lines().next().unwrap_or("invalid arguments");
            line.strip_prefix("error: ").unwrap_or(line).to_string()
        }
    };
    format!("{text} (see '{help} --help')")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help, --version (on stdout, with its final newline)
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            report(&usage_message(&error));
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
            filename_column,
            fill_label,
            progress,
            no_progress,
            max_image_pixels,
            jpeg_draft,
            fallback,
            runtime,
        } => {
            if let Err(Fatal(message, _)) = fallback.check() {
                report(&message);
                return ExitCode::from(2);
            }
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
            let settings = PredictSettings {
                top_k: top_k as usize,
                batch_size: batch_size as usize,
                json,
                output,
                show_progress,
                filename_column,
                fill_label,
                fallback,
            };
            predict(&model, &inputs, &settings, options)
        }
        Command::Serve(args) => serve(args).map(|ok| if ok { 0 } else { 1 }),
        Command::Info { model, json, runtime } => runtime.options().and_then(|options| info(&model, json, options)),
    };
    match outcome {
        Ok(status) => ExitCode::from(status),
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
    // Before looking for ONNX Runtime: the missing model is the first thing to fix.
    require_model_file(model)?;
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

fn require_model_file(model: &Path) -> Result<(), Fatal> {
    if model.exists() {
        Ok(())
    } else {
        Err(Fatal::new(format!("{}: model file not found", model.display())))
    }
}

// The inputs and outputs of `predict` live beside this file (src/bin/butterfly-onnx/): not
// src/bin/NAME.rs, which cargo would take for binaries of their own.
#[path = "butterfly-onnx/inputs.rs"]
mod inputs;
#[path = "butterfly-onnx/outputs.rs"]
mod outputs;
use inputs::*;
use outputs::*;

// -- predict ------------------------------------------------------------------------------

struct PredictSettings {
    top_k: usize,
    batch_size: usize,
    json: bool,
    output: Option<PathBuf>,
    show_progress: bool,
    filename_column: String,
    fill_label: Option<String>,
    fallback: FallbackArgs,
}

fn predict(
    model: &Path,
    inputs: &[String],
    settings: &PredictSettings,
    options: ClassifierOptions,
) -> Result<u8, Fatal> {
    let top_k = settings.top_k;
    // Everything that can be refused is checked before the model is loaded.
    let expanded = expand(inputs, &settings.filename_column)?;
    if let Some(path) = &settings.output {
        check_output(path)?;
    }
    let classifier = settings.fallback.open(model, options)?;
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
    // Results on a terminal that also shows the bar: the bar is cleared around each write,
    // so no line is cut by it and no bar snapshot stays in the scrollback.
    let stdout_shared = bar.is_some() && sink.is_stdout() && std::io::stdout().is_terminal();
    let sources = expanded.images.clone();
    let stream =
        classifier.predict_stream(expanded.images.into_iter().map(ImageInput::Path), top_k, settings.batch_size)?;
    let mut tally = Tally { ok: 0, failed: 0 };
    let fill = settings.fill_label.as_deref();
    for result in stream {
        let result = result?;
        match &result.outcome {
            Ok(_) => tally.ok += 1,
            Err(error) => {
                tally.failed += 1;
                match &bar {
                    Some(bar) => bar.suspend(|| report(&error.to_string())),
                    None => report(&error.to_string()),
                }
            }
        }
        let filename = expanded.filenames.as_ref().map(|names| names[result.index].as_str());
        let source = path_bytes(&sources[result.index]);
        let mut write = || -> Result<(), Fatal> {
            sink.write(source, &result, filename, fill, top_k)?;
            if stdout_shared {
                sink.flush()?;
            }
            Ok(())
        };
        let written = match &bar {
            Some(bar) if stdout_shared => bar.suspend(write),
            _ => write(),
        };
        match (written, settings.output.as_deref()) {
            // `| head`: the reader has what it wanted
            (Err(fatal), _) if fatal.is_broken_pipe() => return Ok(if tally.failed == 0 { 0 } else { 1 }),
            // A full disk: the file named; the previous one is left as it was.
            (Err(Fatal(message, _)), Some(path)) => return Err(cannot_write(path, message)),
            (other, _) => other?,
        }
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear(); // before the last results and messages: no stale bar above them
    }
    match sink.finish(settings.output.as_deref(), &tally, fill) {
        Err(fatal) if fatal.is_broken_pipe() => Ok(if tally.failed == 0 { 0 } else { 1 }),
        other => other,
    }
}

fn info(model: &Path, as_json: bool, options: ClassifierOptions) -> Result<u8, Fatal> {
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
        return Ok(0);
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
        spec.interpolation,
        spec.max_size.map_or(String::new(), |m| format!(", max_size={m}")),
        spec.resample_order,
        spec.mean,
        spec.std
    )?;
    writeln!(out, "provenance:     {}", contract.provenance)?;
    writeln!(out, "providers:      {}", classifier.providers().join("+"))?;
    if let Some(library) = runtime::loaded_library() {
        writeln!(out, "onnxruntime:    {}", library.display())?;
    }
    out.flush()?;
    Ok(0)
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
