//! The one error type of the crate. Every variant names the input it is about, and
//! [`Error::kind`] says which kind of failure it is ([`ErrorKind`], a plain enum to `match`
//! on). [`ErrorKind::python_class`] names each kind's class of python/butterfly_onnx/errors.py
//! (the binding raises it, the server answers with it) in an exhaustive `match`, so a new kind
//! does not compile until it is mapped.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A path as messages name it: its UTF-8 as is, and each byte that is not UTF-8 as `\udcXX`,
/// which is how Python prints the `surrogateescape` name `os.listdir` gives such a file (on
/// stderr, `backslashreplace`): both CLIs name it alike, and no byte is lost (`display` would
/// print U+FFFD).
pub fn path_name(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::fmt::Write;
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        let mut name = String::with_capacity(bytes.len());
        for chunk in bytes.utf8_chunks() {
            name.push_str(chunk.valid());
            for byte in chunk.invalid() {
                let _ = write!(name, "\\udc{byte:02x}");
            }
        }
        name
    }
    #[cfg(not(unix))]
    {
        path.display().to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image path does not exist (or a directory/glob matched no image).
    #[error("{source_name}: image not found")]
    ImageNotFound { source_name: String },

    /// The bytes are not a decodable image: empty, truncated, corrupt, unknown format,
    /// or unreadable from disk.
    #[error("{source_name}: cannot decode image: {reason}")]
    ImageDecode { source_name: String, reason: String },

    /// More pixels than the decompression-bomb limit (checked from the header, before decoding).
    #[error("{source_name}: image of {width}x{height} = {pixels} pixels exceeds the limit of {limit} pixels (decompression bomb protection)")]
    ImageTooLarge { source_name: String, width: u64, height: u64, pixels: u64, limit: u64 },

    /// The model path does not exist.
    #[error("{}: model file not found", path_name(.path))]
    ModelNotFound { path: PathBuf },

    /// The file is not a loadable ONNX model, or its inputs/outputs do not fit a classifier.
    #[error("{}: invalid model: {reason}", path_name(.path))]
    InvalidModel { path: PathBuf, reason: String },

    /// The contract is missing, invalid, of an unknown version, or inconsistent with the model.
    #[error("{source_name}: {reason}")]
    Contract { source_name: String, reason: String },

    /// The ONNX Runtime shared library cannot be found or loaded.
    #[error("ONNX Runtime unavailable: {reason}")]
    RuntimeUnavailable { reason: String },

    /// An execution provider that was asked for cannot run the model: the loaded ONNX
    /// Runtime lacks it, or it failed to initialise (`classifier::providers`; never a
    /// fallback). `message` names it, what the runtime has and what to install.
    #[error("{message}")]
    ProviderUnavailable { provider: String, message: String },

    /// ONNX Runtime failed while running a model.
    #[error("{}: inference failed: {reason}", path_name(.path))]
    Inference { path: PathBuf, reason: String },

    /// The model's output row for this image holds NaN or infinity: no prediction is made
    /// from it (a per-image failure, like a bad image).
    #[error("{source_name}: the model's output is not finite (NaN or infinity), no prediction")]
    NonFiniteOutput { source_name: String },

    /// A caller-side argument is out of range (batch shape, thread count, ...).
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
}

/// What kind of failure an [`Error`] is, without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    ImageNotFound,
    ImageDecode,
    ImageTooLarge,
    ModelNotFound,
    InvalidModel,
    Contract,
    RuntimeUnavailable,
    ProviderUnavailable,
    Inference,
    NonFiniteOutput,
    InvalidArgument,
}

impl ErrorKind {
    /// The name of its Python exception class (python/butterfly_onnx/errors.py): what the
    /// binding raises and what the server's error answers carry in `error_class`.
    pub fn python_class(self) -> &'static str {
        match self {
            ErrorKind::ImageNotFound => "ImageNotFoundError",
            ErrorKind::ImageDecode => "ImageDecodeError",
            ErrorKind::ImageTooLarge => "ImageTooLargeError",
            ErrorKind::ModelNotFound => "ModelNotFoundError",
            ErrorKind::InvalidModel => "InvalidModelError",
            ErrorKind::Contract => "ContractError",
            ErrorKind::RuntimeUnavailable | ErrorKind::ProviderUnavailable => "BackendUnavailableError",
            ErrorKind::Inference => "ButterflyError",
            ErrorKind::NonFiniteOutput => "NonFiniteOutputError",
            ErrorKind::InvalidArgument => "InvalidArgumentError",
        }
    }

    /// Whether the Python class is an `ImageError`, built from the message and the input it
    /// is about (`(message, source)`); the others take the message only.
    pub fn is_image_error(self) -> bool {
        matches!(
            self,
            ErrorKind::ImageNotFound | ErrorKind::ImageDecode | ErrorKind::ImageTooLarge | ErrorKind::NonFiniteOutput
        )
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ImageNotFound { .. } => ErrorKind::ImageNotFound,
            Error::ImageDecode { .. } => ErrorKind::ImageDecode,
            Error::ImageTooLarge { .. } => ErrorKind::ImageTooLarge,
            Error::ModelNotFound { .. } => ErrorKind::ModelNotFound,
            Error::InvalidModel { .. } => ErrorKind::InvalidModel,
            Error::Contract { .. } => ErrorKind::Contract,
            Error::RuntimeUnavailable { .. } => ErrorKind::RuntimeUnavailable,
            Error::ProviderUnavailable { .. } => ErrorKind::ProviderUnavailable,
            Error::Inference { .. } => ErrorKind::Inference,
            Error::NonFiniteOutput { .. } => ErrorKind::NonFiniteOutput,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
        }
    }

    /// The input this error is about (image source or model path), if any.
    pub fn source_name(&self) -> Option<String> {
        match self {
            Error::ImageNotFound { source_name }
            | Error::ImageDecode { source_name, .. }
            | Error::ImageTooLarge { source_name, .. }
            | Error::Contract { source_name, .. }
            | Error::NonFiniteOutput { source_name } => Some(source_name.clone()),
            Error::ModelNotFound { path } | Error::InvalidModel { path, .. } | Error::Inference { path, .. } => {
                Some(path_name(path))
            }
            Error::RuntimeUnavailable { .. } | Error::ProviderUnavailable { .. } | Error::InvalidArgument { .. } => {
                None
            }
        }
    }
}

/// The crate's one panic guard: runs `work` (decoding or preprocessing the image
/// `source_name`) and turns a panic in it (a decoder bug on a malformed file) into that
/// image's `ImageDecode` error, `"{what}: {panic message}"`. Nothing is printed for a caught
/// panic: the process's panic hook is wrapped once and stays quiet while a guarded call runs
/// on the thread; every other panic still reaches the hook installed before. Guards nest.
pub(crate) fn guard<T>(source_name: &str, what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    install_quiet_panic_hook();
    let was_quiet = QUIET_PANICS.with(|q| q.replace(true));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    QUIET_PANICS.with(|q| q.set(was_quiet));
    caught.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(Error::ImageDecode { source_name: source_name.to_string(), reason: format!("{what}: {message}") })
    })
}

thread_local! {
    /// Set while this thread runs a guarded call: its panics become errors, so the panic
    /// hook prints nothing for them.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Wraps the process's panic hook once: panics inside guarded calls are silent, every other
/// panic goes to the hook that was installed before.
fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_guarded_work_is_that_image_s_error() {
        let error = guard::<()>("photo.jpg", "decoder failed", || panic!("index out of bounds")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ImageDecode);
        assert_eq!(error.to_string(), "photo.jpg: cannot decode image: decoder failed: index out of bounds");
        // Nested guards, and results passing through untouched.
        let inner = guard("a", "outer", || guard::<u8>("b", "inner", || panic!("deep")));
        assert!(inner.unwrap_err().to_string().contains("inner: deep"));
        assert_eq!(guard("c", "x", || Ok(7)).unwrap(), 7);
        assert!(!QUIET_PANICS.with(|q| q.get()), "quiet only inside a guard");
    }

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_is_named_as_python_prints_it() {
        use std::os::unix::ffi::OsStrExt;
        let name = |bytes: &[u8]| path_name(Path::new(std::ffi::OsStr::from_bytes(bytes)));
        // what Python's stderr (UTF-8, backslashreplace) writes for os.fsdecode(b"caf\xe9/\xff.jpg")
        assert_eq!(name(b"caf\xe9/\xff.jpg"), "caf\\udce9/\\udcff.jpg");
        assert_eq!(name("été/ok.jpg".as_bytes()), "été/ok.jpg");
        let error = Error::ModelNotFound { path: PathBuf::from(std::ffi::OsStr::from_bytes(b"m\xe9.onnx")) };
        assert_eq!(error.to_string(), "m\\udce9.onnx: model file not found");
        assert_eq!(error.source_name().as_deref(), Some("m\\udce9.onnx"));
    }
}
