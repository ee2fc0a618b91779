//! butterfly-onnx: run an exported butterfly_onnx classifier without Python or torch.
//!
//! * [`decode`]: encoded bytes or a path -> RGB8, exactly as `PIL.Image.open(f).convert("RGB")`.
//! * [`preprocess`]: torchvision's eval preprocessing (Pillow's fixed-point resampling, center
//!   crop, normalize), bit-exact, written straight into the batch tensor.
//! * [`contract`]: the only Rust reader of the model contract (docs/contract.md).
//! * [`classifier`]: ONNX Runtime session (via `ort`), batches, threads.
//! * [`runtime`]: loading the ONNX Runtime shared library at run time (`ort` load-dynamic).
//! * `serve` (feature `serve`): the HTTP model server (`butterfly-onnx serve`).
//! * [`error`]: one error enum; every variant names its input.
//! * [`atomic`]: files written for a user, atomically (temporary file, fsync, rename).

pub mod atomic;
pub mod classifier;
pub mod contract;
pub mod decode;
pub mod error;
pub mod preprocess;
pub mod runtime;
#[cfg(feature = "serve")]
pub mod serve;

pub use error::{Error, ErrorKind, Result};
