//! `predict`'s inputs: files, folders, glob patterns and Kaggle CSVs, named as the Python CLI names them.

use super::*;

// -- inputs -------------------------------------------------------------------------------

/// What `predict` classifies: images, and for a Kaggle CSV the `filename` of each.
pub(crate) struct Inputs {
    pub(crate) images: Vec<PathBuf>,
    pub(crate) filenames: Option<Vec<String>>,
}

/// A path as Python's `str(Path(text))` writes it: no `.` segments, no doubled or trailing
/// separators (so both CLIs name an input the same way).
pub(crate) fn normalized(path: &Path) -> PathBuf {
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

pub(crate) fn image_extensions() -> impl Iterator<Item = &'static str> {
    IMAGE_EXTENSIONS.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#'))
}

pub(crate) fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        let lower = e.to_ascii_lowercase();
        image_extensions().any(|known| known == lower)
    })
}

pub(crate) fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

pub(crate) fn expand(inputs: &[String], filename_column: &str) -> Result<Inputs, Fatal> {
    let csvs: Vec<&String> = inputs.iter().filter(|i| i.to_ascii_lowercase().ends_with(".csv")).collect();
    if let Some(csv) = csvs.first() {
        if inputs.len() != 1 {
            return Err(Fatal::new(format!("{csv}: a CSV input (a list of images) must be the only input")));
        }
        return read_image_list(Path::new(csv.as_str()), filename_column);
    }
    let mut images = Vec::new();
    for text in inputs {
        let path = normalized(Path::new(text));
        if path.is_file() {
            images.push(path);
        } else if path.is_dir() {
            let entries = std::fs::read_dir(&path)
                .map_err(|e| Fatal::new(format!("{}: cannot list the directory: {e}", path.display())))?;
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| normalized(&e.path()))
                .filter(|p| has_image_extension(p) && p.is_file())
                .collect();
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
pub(crate) fn read_image_list(csv_path: &Path, filename_column: &str) -> Result<Inputs, Fatal> {
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
    let column = header.iter().position(|h| h == filename_column).ok_or_else(|| {
        let names: Vec<String> = header.iter().map(py_str_repr).collect();
        Fatal::new(format!(
            "{name}, line 1: missing column(s) [{}]; the header is [{}]",
            py_str_repr(filename_column),
            names.join(", ")
        ))
    })?;
    let folder = {
        let parent = csv_path.parent().unwrap_or(Path::new(""));
        let test = parent.join("test");
        normalized(if test.is_dir() { &test } else { parent })
    };
    let root = resolved(&folder, 40).unwrap_or_else(|| folder.clone());
    let (mut images, mut filenames) = (Vec::new(), Vec::new());
    let mut record = csv::StringRecord::new();
    loop {
        // Lines as Python's csv module counts them (`reader.line_num`): the record's last line.
        let line_after = |reader: &csv::Reader<&[u8]>| {
            let consumed = &text.as_bytes()[..(reader.position().byte() as usize).min(text.len())];
            consumed.iter().filter(|&&b| b == b'\n').count() + usize::from(!consumed.ends_with(b"\n"))
        };
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(Fatal::new(format!("{name}, line {}: not a valid CSV: {e}", line_after(&reader))));
            }
        }
        let line = line_after(&reader);
        if record.iter().all(str::is_empty) && record.len() <= 1 {
            continue; // a blank line, skipped as Python's csv.DictReader skips it
        }
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
pub(crate) fn resolved(path: &Path, depth: usize) -> Option<PathBuf> {
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
