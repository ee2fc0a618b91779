//! The one error type of the crate. Every variant names the input it is about, and
//! [`Error::kind`] says which kind of failure it is ([`ErrorKind`], a plain enum to `match`
//! on). The Python binding maps each kind onto a class of python/butterfly_onnx/errors.py
//! with an exhaustive `match`, so a new kind does not compile until it is mapped.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    #[error("{path}: model file not found")]
    ModelNotFound { path: PathBuf },

    /// The file is not a loadable ONNX model, or its inputs/outputs do not fit a classifier.
    #[error("{path}: invalid model: {reason}")]
    InvalidModel { path: PathBuf, reason: String },

    /// The contract is missing, invalid, of an unknown version, or inconsistent with the model.
    #[error("{source_name}: {reason}")]
    Contract { source_name: String, reason: String },

    /// The ONNX Runtime shared library cannot be found or loaded.
    #[error("ONNX Runtime unavailable: {reason}")]
    RuntimeUnavailable { reason: String },

    /// ONNX Runtime failed while running a model.
    #[error("{path}: inference failed: {reason}")]
    Inference { path: PathBuf, reason: String },

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
    Inference,
    InvalidArgument,
}

/// Transition only: `kind() == "ContractError"` (the variant name + `Error`), as tests written
/// against the old string-returning `kind()` compare. New code compares with `ErrorKind::...`.
impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        other.strip_suffix("Error").is_some_and(|name| format!("{self:?}") == name)
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
            Error::Inference { .. } => ErrorKind::Inference,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
        }
    }

    /// The input this error is about (image source or model path), if any.
    pub fn source_name(&self) -> Option<String> {
        match self {
            Error::ImageNotFound { source_name }
            | Error::ImageDecode { source_name, .. }
            | Error::ImageTooLarge { source_name, .. }
            | Error::Contract { source_name, .. } => Some(source_name.clone()),
            Error::ModelNotFound { path } | Error::InvalidModel { path, .. } | Error::Inference { path, .. } => {
                Some(path.display().to_string())
            }
            Error::RuntimeUnavailable { .. } | Error::InvalidArgument { .. } => None,
        }
    }
}
