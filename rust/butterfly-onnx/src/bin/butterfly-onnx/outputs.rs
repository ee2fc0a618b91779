//! `predict`'s outputs: text, JSON Lines, CSV and Kaggle submissions, byte for byte as the Python CLI writes them.

use super::*;

// -- outputs ------------------------------------------------------------------------------

/// A float as Python's `repr(float)` writes it (shortest round trip; scientific below 1e-4
/// and from 1e16, with a two-digit exponent), so both CLIs write the same bytes.
pub(crate) fn py_float(value: f32) -> String {
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

/// A float of a JSON output: Python's `repr`, or `null` when not finite (no output holds a
/// bare NaN/Infinity, which is not JSON).
pub(crate) fn json_float(value: f32) -> String {
    if value.is_finite() {
        py_float(value)
    } else {
        "null".into()
    }
}

/// A float of a CSV output: Python's `repr`, or an empty cell when not finite.
pub(crate) fn csv_float(value: f32) -> String {
    if value.is_finite() {
        py_float(value)
    } else {
        String::new()
    }
}

/// `text` as Python's `repr(str)` writes it (for messages that quote a CSV header).
pub(crate) fn py_str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    let mut out = String::from(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A JSON string as Python's `json.dumps` writes it (ASCII only, `\uXXXX` escapes).
pub(crate) fn py_json_string(text: &str) -> String {
    py_json_bytes(text.as_bytes())
}

/// [`py_json_string`] of a name that may not be UTF-8: each byte that is not part of valid
/// UTF-8 is written `\udcXX`, as Python's `json.dumps` writes the `surrogateescape` string
/// `os.listdir` gives for it, so both CLIs write the same bytes.
pub(crate) fn py_json_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
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
        for byte in chunk.invalid() {
            out.push_str(&format!("\\udc{byte:02x}"));
        }
    }
    out.push('"');
    out
}

/// A text cell of a predictions CSV: prefixed with `'` when a spreadsheet would run it as a
/// formula (OWASP: it starts with = + - @, a tab or a CR), as Python's `results.csv_cell`.
/// Submissions are written verbatim (Kaggle reads them as data).
pub(crate) fn csv_cell(text: &[u8]) -> Vec<u8> {
    if text.first().is_some_and(|b| b"=+-@\t\r".contains(b)) {
        [b"'".as_slice(), text].concat()
    } else {
        text.to_vec()
    }
}

/// The error message about `source` with the name as its own bytes. The core names a path by
/// `path_name` (`\udcXX` for a byte that is not UTF-8); Python's message holds the
/// `surrogateescape` string, which its JSON writes `\udcXX` and its files as the byte itself.
pub(crate) fn error_bytes(source: &[u8], error: &butterfly_onnx::Error) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let message = error.to_string();
    let shown = butterfly_onnx::error::path_name(Path::new(std::ffi::OsStr::from_bytes(source)));
    match message.strip_prefix(shown.as_str()) {
        Some(rest) => [source, rest.as_bytes()].concat(),
        None => message.into_bytes(),
    }
}

/// The bytes of a path: a name that is not UTF-8 is written as it is on disk (as Python
/// writes a `surrogateescape` name to a file or a stream).
pub(crate) fn path_bytes(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes()
}

/// The JSON Lines object of one input, as the Python CLI's `json.dumps(prediction.to_dict())`.
pub(crate) fn json_line(source: &[u8], result: &ImageResult, top_k: usize) -> String {
    let score = |label: &str, index: usize, probability: f32| {
        format!(
            "{{\"label\": {}, \"index\": {index}, \"probability\": {}}}",
            py_json_string(label),
            json_float(probability)
        )
    };
    let name = py_json_bytes(source);
    match &result.outcome {
        Ok(top) => {
            let best = &top[0];
            let list: Vec<String> = top.iter().take(top_k).map(|p| score(&p.label, p.index, p.probability)).collect();
            format!(
                "{{\"source\": {name}, \"label\": {}, \"index\": {}, \"probability\": {}, \"top_k\": [{}], \"error\": null}}",
                py_json_string(&best.label),
                best.index,
                json_float(best.probability),
                list.join(", ")
            )
        }
        Err(error) => format!(
            "{{\"source\": {name}, \"label\": null, \"index\": null, \"probability\": null, \"top_k\": [], \"error\": {}}}",
            py_json_bytes(&error_bytes(source, error))
        ),
    }
}

/// Where predictions go: stdout, or a file written atomically (it takes its name only once
/// the run is over, see [`Sink::finish`]).
pub(crate) enum Sink {
    Text(BufWriter<std::io::StdoutLock<'static>>),
    JsonLines(BufWriter<std::io::StdoutLock<'static>>),
    JsonLinesFile(BufWriter<AtomicFile>),
    Csv(csv::Writer<AtomicFile>),
    Submission(csv::Writer<AtomicFile>),
}

pub(crate) fn cannot_write(path: &Path, error: impl std::fmt::Display) -> Fatal {
    Fatal::new(format!("{}: cannot write: {error}", normalized(path).display()))
}

pub(crate) fn csv_writer(path: &Path) -> Result<csv::Writer<AtomicFile>, Fatal> {
    let file = AtomicFile::create(path).map_err(|e| cannot_write(path, e))?;
    // As Python's csv.writer: minimal quoting, \r\n line ends.
    Ok(csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(file))
}

/// The format of `-o FILE` by its extension: ".csv" or ".jsonl", else a usage error; and
/// its folder must exist (folders are not created). Checked before any work.
pub(crate) fn check_output(path: &Path) -> Result<&'static str, Fatal> {
    let suffix = path.extension().map(|e| format!(".{}", e.to_string_lossy().to_lowercase()));
    let format = match suffix.as_deref() {
        Some(".csv") => ".csv",
        Some(".jsonl") => ".jsonl",
        other => {
            return Err(Fatal::new(format!(
                "{}: unknown output format '{}'; use .csv or .jsonl",
                path.display(),
                other.unwrap_or("(no extension)")
            )))
        }
    };
    let shown = normalized(path);
    let parent = shown.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Fatal::new(format!(
            "{}: cannot write the predictions: the folder {} does not exist",
            shown.display(),
            parent.display()
        )));
    }
    if path.is_dir() {
        return Err(Fatal::new(format!("{}: cannot write the predictions: it is a folder", shown.display())));
    }
    Ok(format)
}

/// `X.partial.csv` beside `X.csv`: where an incomplete submission goes.
pub(crate) fn partial_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let suffix = path.extension().map_or(".csv".to_string(), |e| format!(".{}", e.to_string_lossy()));
    path.with_file_name(format!("{stem}.partial{suffix}"))
}

/// How a run went: predictions made and inputs failed.
pub(crate) struct Tally {
    pub(crate) ok: usize,
    pub(crate) failed: usize,
}

impl Sink {
    /// The sink for `-o FILE` (by extension; checked before any work) or stdout.
    pub(crate) fn new(output: Option<&Path>, json: bool, kaggle: bool, top_k: usize) -> Result<Sink, Fatal> {
        let Some(path) = output else {
            let stdout = BufWriter::new(std::io::stdout().lock());
            return Ok(if json { Sink::JsonLines(stdout) } else { Sink::Text(stdout) });
        };
        match check_output(path)? {
            ".csv" if kaggle => {
                let mut writer = csv_writer(path)?;
                writer.write_record(["filename", "label"]).map_err(|e| cannot_write(path, e))?;
                Ok(Sink::Submission(writer))
            }
            ".csv" => {
                let mut writer = csv_writer(path)?;
                let mut header: Vec<String> = ["source", "label", "index", "probability"].map(String::from).to_vec();
                for k in 1..=top_k {
                    header.extend([format!("label_{k}"), format!("index_{k}"), format!("probability_{k}")]);
                }
                header.push("error".into());
                writer.write_record(&header).map_err(|e| cannot_write(path, e))?;
                Ok(Sink::Csv(writer))
            }
            _ => {
                let file = AtomicFile::create(path).map_err(|e| cannot_write(path, e))?;
                Ok(Sink::JsonLinesFile(BufWriter::new(file)))
            }
        }
    }

    pub(crate) fn is_stdout(&self) -> bool {
        matches!(self, Sink::Text(_) | Sink::JsonLines(_))
    }

    pub(crate) fn write(
        &mut self,
        source: &[u8],
        result: &ImageResult,
        filename: Option<&str>,
        fill: Option<&str>,
        top_k: usize,
    ) -> Result<(), Fatal> {
        match self {
            Sink::Text(out) => {
                if let Ok(top) = &result.outcome {
                    let scores: String = top.iter().map(|p| format!("\t{} ({:.4})", p.label, p.probability)).collect();
                    out.write_all(source)?;
                    writeln!(out, "{scores}")?;
                }
            }
            Sink::JsonLines(out) => writeln!(out, "{}", json_line(source, result, top_k))?,
            Sink::JsonLinesFile(out) => writeln!(out, "{}", json_line(source, result, top_k))?,
            Sink::Csv(writer) => {
                let mut row: Vec<Vec<u8>> = vec![csv_cell(source)];
                match &result.outcome {
                    Ok(top) => {
                        let cells = |label: &str, index: usize, p: f32| {
                            [csv_cell(label.as_bytes()), index.to_string().into_bytes(), csv_float(p).into_bytes()]
                        };
                        row.extend(cells(&top[0].label, top[0].index, top[0].probability));
                        for k in 0..top_k {
                            match top.get(k) {
                                Some(p) => row.extend(cells(&p.label, p.index, p.probability)),
                                None => row.extend([Vec::new(), Vec::new(), Vec::new()]),
                            }
                        }
                        row.push(Vec::new());
                    }
                    Err(error) => {
                        row.extend(std::iter::repeat_n(Vec::new(), 3 + 3 * top_k));
                        row.push(csv_cell(&error_bytes(source, error)));
                    }
                }
                writer.write_record(&row)?;
            }
            Sink::Submission(writer) => {
                let label = match &result.outcome {
                    Ok(top) => Some(top[0].label.as_str()),
                    Err(_) => fill,
                };
                if let (Some(label), Some(filename)) = (label, filename) {
                    writer.write_record([filename, label])?;
                }
            }
        }
        Ok(())
    }

    /// Flush stdout (a live progress bar is suspended around it).
    pub(crate) fn flush(&mut self) -> Result<(), Fatal> {
        match self {
            Sink::Text(out) | Sink::JsonLines(out) => out.flush()?,
            _ => {}
        }
        Ok(())
    }

    /// End the run: flush stdout, or give the file its name -- unless no input was
    /// predicted (nothing written, exit 2) or a submission misses rows (the rows made go to
    /// `X.partial.csv`, X.csv is left alone, exit 1). Returns the exit status.
    pub(crate) fn finish(self, path: Option<&Path>, tally: &Tally, fill: Option<&str>) -> Result<u8, Fatal> {
        let status = if tally.failed == 0 {
            0
        } else if tally.ok == 0 {
            2
        } else {
            1
        };
        let file = match self {
            Sink::Text(mut out) | Sink::JsonLines(mut out) => {
                out.flush()?;
                return Ok(status);
            }
            Sink::JsonLinesFile(out) => {
                out.into_inner().map_err(|e| cannot_write(path.expect("a file sink has a path"), e.into_error()))?
            }
            Sink::Csv(writer) => {
                writer.into_inner().map_err(|e| cannot_write(path.expect("a file sink has a path"), e.into_error()))?
            }
            Sink::Submission(writer) => {
                let path = path.expect("a submission has a path");
                let file = writer.into_inner().map_err(|e| cannot_write(path, e.into_error()))?;
                let shown = normalized(path);
                let total = tally.ok + tally.failed;
                if tally.failed == 0 {
                    file.commit(None).map_err(|e| cannot_write(path, e))?;
                } else if tally.ok == 0 {
                    report(&format!("{}: not written: none of the {total} images could be predicted", shown.display()));
                } else if let Some(fill) = fill {
                    file.commit(None).map_err(|e| cannot_write(path, e))?;
                    report(&format!(
                        "{}: {} of {total} rows filled with {} (--fill-label)",
                        shown.display(),
                        tally.failed,
                        py_str_repr(fill)
                    ));
                } else {
                    let partial = partial_path(path);
                    file.commit(Some(&partial)).map_err(|e| cannot_write(&partial, e))?;
                    report(&format!(
                        "{}: not written: {} of {total} images have no prediction (named above) and Kaggle rejects \
                         a submission with rows missing; the {} predictions made are in {} (--fill-label LABEL \
                         writes a complete submission with LABEL for those rows)",
                        shown.display(),
                        tally.failed,
                        tally.ok,
                        normalized(&partial).display()
                    ));
                }
                return Ok(status);
            }
        };
        let path = path.expect("a file sink has a path");
        if tally.ok == 0 && tally.failed > 0 {
            // Nothing done: the previous file stays as it was.
            return Err(Fatal::new(format!(
                "{}: not written: no input could be predicted",
                normalized(path).display()
            )));
        }
        file.commit(None).map_err(|e| cannot_write(path, e))?;
        Ok(status)
    }
}
