//! torchvision's eval preprocessing on a PIL image, bit for bit:
//! `Resize(resize_size, interpolation, max_size)` + `CenterCrop(crop_size)` + `ToTensor()` +
//! `Normalize(mean, std)` (the `ImageClassification` preset), written straight into a CHW
//! float32 slice (one image of the batch tensor). The formulas are in
//! `docs/preprocessing.md`; Pillow and torchvision are the oracle in the tests.
//!
//! Speed comes from doing less, not from approximating: only the rows and columns that
//! survive the center crop are resampled (the horizontal pass only reads the input rows the
//! vertical pass needs), coefficients are computed once per axis and call, the inner loops are
//! fixed-length integer multiply-adds, and normalization is a 256-entry table per channel.

pub mod crop;
pub mod normalize;
pub mod resize;

use std::borrow::Cow;
use std::ops::Range;

use crate::{Error, Result};

pub use crate::spec::{Interpolation, PreprocessSpec, ResampleOrder};
pub use crop::{center_crop_axis, AxisCrop};
pub use normalize::{normalize_level, NormalizeTable};
use resize::Scratch;
pub use resize::{AxisCoefficients, Plane};

/// Floats in one image's CHW tensor: `3 * crop_size * crop_size`.
pub fn output_len(spec: &PreprocessSpec) -> usize {
    spec.output_len()
}

/// A borrowed HWC RGB8 image (`data.len() == width * height * 3`).
#[derive(Clone, Copy, Debug)]
pub struct ImageView<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

impl<'a> ImageView<'a> {
    fn validate(&self) -> Result<()> {
        let expected = self.width as usize * self.height as usize * 3;
        if self.width == 0 || self.height == 0 || self.data.len() != expected {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "an RGB8 image of {}x{} needs {expected} bytes (> 0), got {}",
                    self.width,
                    self.height,
                    self.data.len()
                ),
            });
        }
        Ok(())
    }

    fn plane(&self) -> Plane<'a> {
        Plane {
            data: self.data,
            stride: self.width as usize * 3,
            x0: 0,
            width: self.width as usize,
            rows: self.height as usize,
        }
    }
}

/// torchvision's `Resize(size, max_size=...)` output size for a `width x height` image
/// (`functional.py::_compute_resized_output_size`): the shorter side becomes `size`, the longer
/// `int(size * long / short)` (float64 division, truncated); with `max_size`, if the longer
/// side exceeds it, `new_short = int(max_size * new_short / new_long)` and `new_long = max_size`.
pub fn resized_size(width: u32, height: u32, size: u32, max_size: Option<u32>) -> Result<(u32, u32)> {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    if short == 0 || size == 0 {
        return Err(Error::InvalidArgument { reason: format!("cannot resize a {width}x{height} image to {size}") });
    }
    // Both products are exact in f64 and Python's int / int is the correctly rounded quotient.
    let mut new_short = size as u64;
    let mut new_long = (size as f64 * long as f64 / short as f64) as u64;
    if let Some(max) = max_size {
        if new_long > max as u64 {
            new_short = (max as f64 * new_short as f64 / new_long as f64) as u64;
            new_long = max as u64;
        }
    }
    if new_short == 0 || new_long > u32::MAX as u64 {
        return Err(Error::InvalidArgument {
            reason: format!("a {width}x{height} image resizes to a degenerate size ({new_short} x {new_long})"),
        });
    }
    let (new_short, new_long) = (new_short as u32, new_long as u32);
    Ok(if width <= height { (new_short, new_long) } else { (new_long, new_short) })
}

/// A resampled rectangle: `rows x width` RGB8 pixels, row `r` at `data[r * stride + x0 * 3..]`.
pub struct Region<'a> {
    pub data: Cow<'a, [u8]>,
    pub stride: usize,
    pub x0: usize,
    pub width: usize,
    pub rows: usize,
}

/// The pixels `cols x rows` of `image` resized to `out_w x out_h` with Pillow's
/// `Image.resize((out_w, out_h), filter)` (no box, no reducing_gap), computing only that
/// rectangle. Returns the image itself (no copy) when the size does not change, as
/// torchvision does.
pub fn resample_region<'a>(
    image: ImageView<'a>,
    out_w: u32,
    out_h: u32,
    cols: Range<usize>,
    rows: Range<usize>,
    filter: Interpolation,
    order: ResampleOrder,
) -> Result<Region<'a>> {
    let mut scratch = Scratch::take();
    let region = resample_region_with(image, out_w, out_h, cols, rows, filter, order, &mut scratch);
    scratch.give_back();
    region
}

#[allow(clippy::too_many_arguments)]
fn resample_region_with<'a>(
    image: ImageView<'a>,
    out_w: u32,
    out_h: u32,
    cols: Range<usize>,
    rows: Range<usize>,
    filter: Interpolation,
    order: ResampleOrder,
    scratch: &mut Scratch,
) -> Result<Region<'a>> {
    image.validate()?;
    if cols.end > out_w as usize || rows.end > out_h as usize || cols.start > cols.end || rows.start > rows.end {
        return Err(Error::InvalidArgument {
            reason: format!("region {cols:?} x {rows:?} is outside a {out_w}x{out_h} image"),
        });
    }
    let (in_w, in_h) = (image.width as usize, image.height as usize);
    let need_h = out_w as usize != in_w;
    let need_v = out_h as usize != in_h;
    let src = image.plane();
    let (n_cols, n_rows) = (cols.len(), rows.len());

    if !need_h && !need_v {
        let offset = rows.start * src.stride;
        return Ok(Region {
            data: Cow::Borrowed(&image.data[offset..]),
            stride: src.stride,
            x0: cols.start,
            width: n_cols,
            rows: n_rows,
        });
    }
    if need_h && need_v && order.vertical_first(image.width, image.height, out_w, out_h) {
        // Vertical pass over the input columns the horizontal pass will read, then horizontal.
        let (xc, used_cols) = resize::rebased_axis(in_w, out_w as usize, cols, filter);
        let (yc, used_rows) = resize::rebased_axis(in_h, out_h as usize, rows, filter);
        let window = Plane {
            data: &image.data[used_rows.start * src.stride..],
            stride: src.stride,
            x0: used_cols.start,
            width: used_cols.len(),
            rows: used_rows.len(),
        };
        let tmp = resize::sized(&mut scratch.tmp, n_rows * used_cols.len() * 3);
        resize::vertical_pass(window, &yc, tmp, &mut scratch.acc);
        let tmp_plane = Plane { data: tmp, stride: used_cols.len() * 3, x0: 0, width: used_cols.len(), rows: n_rows };
        let mut out = std::mem::take(&mut scratch.out);
        resize::horizontal_pass(tmp_plane, &xc, resize::sized(&mut out, n_rows * n_cols * 3), &mut scratch.horizontal);
        return Ok(Region { data: Cow::Owned(out), stride: n_cols * 3, x0: 0, width: n_cols, rows: n_rows });
    }

    // Horizontal pass first (Pillow's usual order), over the input rows the vertical pass reads.
    let yc = if need_v { Some(resize::rebased_axis(in_h, out_h as usize, rows.clone(), filter)) } else { None };
    let used_rows = yc.as_ref().map_or(rows.clone(), |(_, used)| used.clone());
    let (mid, mid_stride, mid_x0): (Cow<'a, [u8]>, usize, usize) = if need_h {
        let (xc, used_cols) = resize::rebased_axis(in_w, out_w as usize, cols.clone(), filter);
        let window = Plane {
            data: &image.data[used_rows.start * src.stride..],
            stride: src.stride,
            x0: used_cols.start,
            width: used_cols.len(),
            rows: used_rows.len(),
        };
        let mut tmp = std::mem::take(&mut scratch.tmp);
        resize::horizontal_pass(
            window,
            &xc,
            resize::sized(&mut tmp, used_rows.len() * n_cols * 3),
            &mut scratch.horizontal,
        );
        (Cow::Owned(tmp), n_cols * 3, 0)
    } else {
        (Cow::Borrowed(&image.data[used_rows.start * src.stride..]), src.stride, cols.start)
    };
    match yc {
        None => Ok(Region { data: mid, stride: mid_stride, x0: mid_x0, width: n_cols, rows: n_rows }),
        Some((yc, used)) => {
            let mid_plane = Plane { data: &mid, stride: mid_stride, x0: mid_x0, width: n_cols, rows: used.len() };
            let mut out = std::mem::take(&mut scratch.out);
            resize::vertical_pass(mid_plane, &yc, resize::sized(&mut out, n_rows * n_cols * 3), &mut scratch.acc);
            if let Cow::Owned(tmp) = mid {
                scratch.tmp = tmp;
            }
            Ok(Region { data: Cow::Owned(out), stride: n_cols * 3, x0: 0, width: n_cols, rows: n_rows })
        }
    }
}

/// Preprocess one RGB8 image into `out` (CHW float32, `output_len(spec)` long), exactly as
/// torchvision's `Resize` + `CenterCrop` + `ToTensor` + `Normalize` on the PIL image.
pub fn preprocess_into(image: ImageView<'_>, spec: &PreprocessSpec, out: &mut [f32]) -> Result<()> {
    spec.validate()?;
    image.validate()?;
    let c = spec.crop_size as usize;
    if out.len() != output_len(spec) {
        return Err(Error::InvalidArgument {
            reason: format!("output slice has {} floats, a 3x{c}x{c} tensor needs {}", out.len(), output_len(spec)),
        });
    }
    let (out_w, out_h) = resized_size(image.width, image.height, spec.resize_size, spec.max_size)?;
    let xc = center_crop_axis(out_w as usize, c);
    let yc = center_crop_axis(out_h as usize, c);
    let region = resample_region(
        image,
        out_w,
        out_h,
        xc.src_start..xc.src_start + xc.count,
        yc.src_start..yc.src_start + yc.count,
        spec.interpolation,
        spec.resample_order,
    )?;
    let table = NormalizeTable::cached(spec.mean, spec.std);
    let (r_plane, rest) = out.split_at_mut(c * c);
    let (g_plane, b_plane) = rest.split_at_mut(c * c);
    if xc.count < c || yc.count < c {
        // torchvision pads with fill=0, i.e. pixel level 0, before normalizing.
        r_plane.fill(table.channels[0][0]);
        g_plane.fill(table.channels[1][0]);
        b_plane.fill(table.channels[2][0]);
    }
    let [t_r, t_g, t_b] = &table.channels;
    for y in 0..yc.count {
        let src_start = y * region.stride + region.x0 * 3;
        let src = &region.data[src_start..src_start + xc.count * 3];
        let dst_start = (yc.dst_start + y) * c + xc.dst_start;
        let range = dst_start..dst_start + xc.count;
        for (((px, r), g), b) in src
            .chunks_exact(3)
            .zip(&mut r_plane[range.clone()])
            .zip(&mut g_plane[range.clone()])
            .zip(&mut b_plane[range])
        {
            *r = t_r[px[0] as usize];
            *g = t_g[px[1] as usize];
            *b = t_b[px[2] as usize];
        }
    }
    if let Cow::Owned(buffer) = region.data {
        let mut scratch = Scratch::take();
        scratch.out = buffer;
        scratch.give_back();
    }
    Ok(())
}

/// [`preprocess_into`] into a new `Vec` of `output_len(spec)` floats.
pub fn preprocess(image: ImageView<'_>, spec: &PreprocessSpec) -> Result<Vec<f32>> {
    let mut out = vec![0f32; output_len(spec)];
    preprocess_into(image, spec, &mut out)?;
    Ok(out)
}
