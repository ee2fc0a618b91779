//! `butterfly-onnx`: classify images with an exported model, without Python or torch.
//!
//! ```text
//! butterfly-onnx predict MODEL IMAGES... [--top-k 5] [--threads N] [--json] [--ort-lib PATH]
//! butterfly-onnx info MODEL [--json] [--ort-lib PATH]
//! ```
//! Exit status: 0 when every image was classified, 1 when some images failed (the others
//! are still printed; the failures go to stderr), 2 when nothing could run (bad model,
//! no ONNX Runtime, bad arguments).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use butterfly_onnx::classifier::{Classifier, ClassifierOptions, ImageInput, DEFAULT_MAX_IMAGE_PIXELS};
use butterfly_onnx::contract::{interpolation_name, resample_order_name};
use butterfly_onnx::{runtime, Error};
use clap::{Parser, Subcommand};
use serde_json::json;

/// File extensions a directory expands to, compared lowercased (as images.py IMAGE_EXTENSIONS).
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"];

#[derive(Parser)]
#[command(name = "butterfly-onnx", version, about = "Classify images with a butterfly_onnx model (ONNX Runtime, torchvision-exact preprocessing)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RuntimeArgs {
    /// The libonnxruntime shared library. Default: $BUTTERFLY_ONNX_ORT_LIB, $ORT_DYLIB_PATH,
    /// else the onnxruntime wheel of `$BUTTERFLY_ONNX_PYTHON` (default `python3`).
    #[arg(long, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the top-k classes of each image.
    Predict {
        /// The exported .onnx model.
        model: PathBuf,
        /// Image files or directories (a directory expands to its image files, sorted).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// How many classes to print per image.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Threads for decoding and for ONNX Runtime (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Images per inference batch (memory bound, not results: rows are independent).
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Refuse images with more pixels (0 = no limit); Pillow's bomb limit by default.
        #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_PIXELS)]
        max_image_pixels: u64,
        /// One JSON document on stdout instead of text.
        #[arg(long)]
        json: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Predict { model, images, top_k, threads, batch_size, max_image_pixels, json, runtime } => {
            let options = ClassifierOptions {
                threads,
                max_image_pixels: (max_image_pixels > 0).then_some(max_image_pixels),
                ort_library: runtime.ort_lib,
                ..ClassifierOptions::default()
            };
            predict(&model, &images, top_k, batch_size, json, options)
        }
        Command::Info { model, json, runtime } => {
            info(&model, json, ClassifierOptions { ort_library: runtime.ort_lib, ..ClassifierOptions::default() })
        }
    };
    match outcome {
        Ok(all_ok) => ExitCode::from(if all_ok { 0 } else { 1 }),
        Err(error) => {
            eprintln!("butterfly-onnx: {error}");
            ExitCode::from(2)
        }
    }
}

/// Load ONNX Runtime: --ort-lib, the environment, else ask Python for the wheel's library.
fn open(model: &Path, mut options: ClassifierOptions) -> Result<Classifier, Error> {
    if runtime::configured_library(options.ort_library.as_deref()).is_none() {
        let python = std::env::var("BUTTERFLY_ONNX_PYTHON").unwrap_or_else(|_| "python3".into());
        options.ort_library = Some(runtime::find_python_onnxruntime(&python).ok_or_else(|| Error::RuntimeUnavailable {
            reason: format!(
                "no ONNX Runtime library: pass --ort-lib PATH, set {} or {}, or install the onnxruntime \
                 wheel for `{python}` (or name another interpreter in BUTTERFLY_ONNX_PYTHON)",
                runtime::ENV_VARS[0],
                runtime::ENV_VARS[1]
            ),
        })?);
    }
    Classifier::open(model, options)
}

/// Files as given; directories replaced by their image files in sorted order.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| Error::ImageNotFound {
                source_name: format!("{} ({e})", path.display()),
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && has_image_extension(p))
                .collect();
            if found.is_empty() {
                return Err(Error::ImageNotFound { source_name: format!("{} (no image files in the directory)", path.display()) });
            }
            found.sort();
            files.extend(found);
        } else {
            // Missing files are reported per image by the decoder, like unreadable ones.
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn predict(
    model: &Path,
    images: &[PathBuf],
    top_k: usize,
    batch_size: usize,
    as_json: bool,
    options: ClassifierOptions,
) -> Result<bool, Error> {
    if batch_size == 0 {
        return Err(Error::InvalidArgument { reason: "--batch-size must be at least 1".into() });
    }
    let files = expand(images)?;
    let classifier = open(model, options)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for chunk in files.chunks(batch_size) {
        let inputs: Vec<ImageInput> = chunk.iter().cloned().map(ImageInput::Path).collect();
        let (predictions, errors) = classifier.predict(&inputs, top_k)?;
        for (index, error) in errors {
            eprintln!("error: {error}");
            failures.push(json!({"source": inputs[index].source(), "kind": format!("{:?}", error.kind()), "message": error.to_string()}));
        }
        for (index, top) in predictions {
            let source = inputs[index].source();
            if as_json {
                let top: Vec<_> = top
                    .iter()
                    .map(|p| json!({"label": p.label, "index": p.index, "probability": p.probability}))
                    .collect();
                results.push(json!({"source": source, "top_k": top}));
            } else {
                let text: Vec<String> = top.iter().map(|p| format!("{} ({:.4})", p.label, p.probability)).collect();
                writeln!(out, "{source}\t{}", text.join("\t")).ok();
            }
        }
    }
    if as_json {
        let document = json!({"model": model.display().to_string(), "predictions": results, "errors": failures});
        writeln!(out, "{}", serde_json::to_string_pretty(&document).expect("JSON values")).ok();
    }
    Ok(failures.is_empty())
}

fn info(model: &Path, as_json: bool, options: ClassifierOptions) -> Result<bool, Error> {
    let classifier = open(model, options)?;
    let contract = classifier.contract();
    if as_json {
        let mut document = contract.to_value();
        document["model"] = json!(model.display().to_string());
        document["static_batch"] = json!(classifier.static_batch());
        println!("{}", serde_json::to_string_pretty(&document).expect("JSON values"));
        return Ok(true);
    }
    let spec = &contract.preprocess;
    let crop = spec.crop_size;
    println!("model:          {}", model.display());
    println!("schema_version: {}", contract.schema_version);
    println!("classes:        {}", contract.labels.len());
    let shown: Vec<&str> = contract.labels.iter().take(10).map(String::as_str).collect();
    let more = if contract.labels.len() > 10 { format!(", ... ({} more)", contract.labels.len() - 10) } else { String::new() };
    println!("labels:         {}{more}", shown.join(", "));
    let batch = classifier.static_batch().map_or("N".to_string(), |b| b.to_string());
    println!("input:          {} [{batch}, 3, {crop}, {crop}] float32", contract.input_name);
    println!("output:         {} ({})", contract.output_name, contract.output_kind.as_str());
    println!(
        "preprocess:     Resize({}, {}{}, {}) -> CenterCrop({crop}) -> ToTensor -> Normalize(mean={:?}, std={:?})",
        spec.resize_size,
        interpolation_name(spec.interpolation),
        spec.max_size.map_or(String::new(), |m| format!(", max_size={m}")),
        resample_order_name(spec.resample_order),
        spec.mean,
        spec.std
    );
    println!("provenance:     {}", contract.provenance);
    if let Some(library) = runtime::loaded_library() {
        println!("onnxruntime:    {}", library.display());
    }
    Ok(true)
}
