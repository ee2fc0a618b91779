//! Decoding and preprocessing a list of images into one batch tensor, in parallel on the
//! classifier's rayon pool, each image written straight into its row.

use ndarray::Array4;
use rayon::prelude::*;

use super::{ImageErrors, ImageInput};
use crate::decode::{self, DecodeLimits};
use crate::preprocess::{self, ImageView, PreprocessSpec};
use crate::{Error, Result};

/// A zeroed batch tensor of `n` images at `crop`x`crop`, or `InvalidArgument` naming the
/// bytes when they cannot be had (instead of aborting the process).
pub(super) fn alloc_batch(n: usize, crop: usize) -> Result<Vec<f32>> {
    let too_big = |bytes: Option<usize>| {
        let bytes = bytes
            .map_or_else(|| "more than usize::MAX".to_string(), |b| format!("{:.1} GiB", b as f64 / 2f64.powi(30)));
        Error::InvalidArgument {
            reason: format!(
                "a batch of {n} images at {crop}x{crop} needs {bytes}, more than is available; use a smaller batch_size"
            ),
        }
    };
    let len = n.checked_mul(3).and_then(|v| v.checked_mul(crop)).and_then(|v| v.checked_mul(crop));
    let bytes = len.and_then(|l| l.checked_mul(std::mem::size_of::<f32>()));
    let (Some(len), Some(_)) = (len, bytes) else {
        return Err(too_big(None));
    };
    let mut data = Vec::new();
    data.try_reserve_exact(len).map_err(|_| too_big(bytes))?;
    data.resize(len, 0f32);
    Ok(data)
}

/// What turns inputs into rows: the contract's preprocessing and the decoding limits.
/// Shared (`Arc`) with the decoding tasks of the pipeline.
#[derive(Debug)]
pub(super) struct Preprocessor {
    pub spec: PreprocessSpec,
    pub limits: DecodeLimits,
}

impl Preprocessor {
    /// Decode and preprocess `items` (run this inside the classifier's pool: the images are
    /// spread over its threads). Returns the rows of the images that succeeded, in input
    /// order, shape `(n_ok, 3, crop, crop)`, and the failures by index in `items`.
    ///
    /// `Err(InvalidArgument)` when the batch tensor cannot be allocated (a large crop times
    /// many images): the caller should use a smaller batch size.
    pub fn batch(&self, items: &[ImageInput]) -> Result<(Array4<f32>, ImageErrors)> {
        let crop = self.spec.crop_size as usize;
        let row_len = 3 * crop * crop;
        let mut data = alloc_batch(items.len(), crop)?;
        let outcomes: Vec<Result<()>> = if items.len() == 1 {
            // One image: no hand-off to another thread.
            vec![self.guarded(&items[0], &mut data)]
        } else {
            data.par_chunks_mut(row_len.max(1))
                .zip(items.par_iter())
                .map(|(row, item)| self.guarded(item, row))
                .collect()
        };
        let mut errors = Vec::new();
        let mut kept = 0;
        for (index, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(()) => {
                    if kept != index {
                        data.copy_within(index * row_len..(index + 1) * row_len, kept * row_len);
                    }
                    kept += 1;
                }
                Err(error) => errors.push((index, error)),
            }
        }
        data.truncate(kept * row_len);
        let batch = Array4::from_shape_vec((kept, 3, crop, crop), data).expect("rows of 3*crop*crop floats");
        Ok((batch, errors))
    }

    /// One image under the crate's panic guard ([`crate::error::guard`]): a panic while
    /// decoding or preprocessing it becomes its error; the batch, the pipeline and the Python
    /// process carry on.
    fn guarded(&self, item: &ImageInput, row: &mut [f32]) -> Result<()> {
        crate::error::guard(&item.source(), "internal error", || self.one(item, row))
    }

    fn one(&self, item: &ImageInput, row: &mut [f32]) -> Result<()> {
        let decoded;
        let (source, image) = match item {
            ImageInput::Path(path) => {
                decoded = decode::read_rgb(path, &self.limits)?;
                (crate::error::path_name(path), &decoded)
            }
            ImageInput::Bytes { source, bytes } => {
                decoded = decode::decode_rgb(bytes, source, &self.limits)?;
                (source.clone(), &decoded)
            }
            ImageInput::Rgb { source, image } => {
                let expected = image.width as u64 * image.height as u64 * 3;
                if image.width == 0 || image.height == 0 || image.data.len() as u64 != expected {
                    return Err(Error::ImageDecode {
                        source_name: source.clone(),
                        reason: format!(
                            "an RGB image of {}x{} needs {expected} bytes (> 0), got {}",
                            image.width,
                            image.height,
                            image.data.len()
                        ),
                    });
                }
                (source.clone(), image)
            }
        };
        let view = ImageView { width: image.width, height: image.height, data: &image.data };
        preprocess::preprocess_into(view, &self.spec, row).map_err(|e| match e {
            // Preprocessing errors name the image they are about.
            Error::InvalidArgument { reason } => Error::ImageDecode { source_name: source, reason },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_too_big_to_allocate_is_an_error_not_an_abort() {
        // 2^20 images at 8192x8192: 3 * 2^48 bytes, beyond any address space.
        for (n, crop) in [(1usize << 20, 8192usize), (usize::MAX / 2, 8192)] {
            let error = alloc_batch(n, crop).unwrap_err();
            assert!(matches!(error, Error::InvalidArgument { .. }), "{error:?}");
            let message = error.to_string();
            assert!(message.contains("use a smaller batch_size") && message.contains("8192x8192"), "{message}");
        }
        assert!(alloc_batch(1 << 20, 8192).unwrap_err().to_string().contains("786432.0 GiB"));
        assert_eq!(alloc_batch(2, 4).unwrap(), vec![0f32; 2 * 3 * 4 * 4]);
    }
}
