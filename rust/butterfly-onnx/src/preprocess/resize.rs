//! Pillow's 8-bit resampling (`src/libImaging/Resample.c`), one axis at a time.
//!
//! Coefficients are computed in f64 exactly as `precompute_coeffs` does, then turned into
//! fixed point with `PRECISION_BITS = 22` as `normalize_coeffs_8bpc` does; the pixel passes
//! accumulate in i32 from `1 << 21` and clip `acc >> 22` to 0..=255 (Pillow's `clip8`).
//! Only the output indices that survive the center crop are computed: every output value
//! depends on its own window alone, so the values are identical.

use std::cell::RefCell;
use std::ops::Range;

use super::Interpolation;

/// Pillow: `#define PRECISION_BITS (32 - 8 - 2)`.
pub const PRECISION_BITS: u32 = 22;
const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

impl Interpolation {
    /// Pillow's filter support (`BILINEAR = {bilinear_filter, 1.0}`, `BICUBIC = {.., 2.0}`).
    pub fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    /// Pillow's `bilinear_filter` / `bicubic_filter` (Keys cubic with a = -0.5).
    pub fn weight(self, x: f64) -> f64 {
        let x = if x < 0.0 { -x } else { x };
        match self {
            Interpolation::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// The f64 window of one output index: first input index and normalized weights, exactly as
/// Pillow's `precompute_coeffs` (box = the whole axis, `in0 = 0`, `in1 = in_len` as float).
pub fn pillow_window(in_len: usize, out_len: usize, out_index: usize, filter: Interpolation) -> (usize, Vec<f64>) {
    let (scale, filterscale, support) = axis_scale(in_len, out_len, filter);
    window(in_len, scale, filterscale, support, out_index, filter)
}

fn axis_scale(in_len: usize, out_len: usize, filter: Interpolation) -> (f64, f64, f64) {
    // Pillow passes the box edges as C floats: `(double)(in1 - in0) / outSize`.
    let scale = (in_len as f32) as f64 / out_len as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    (scale, filterscale, filter.support() * filterscale)
}

fn window(
    in_len: usize,
    scale: f64,
    filterscale: f64,
    support: f64,
    out_index: usize,
    filter: Interpolation,
) -> (usize, Vec<f64>) {
    let center = (out_index as f64 + 0.5) * scale;
    let ss = 1.0 / filterscale;
    // C's (int) cast truncates toward zero, as `as i64` does.
    let xmin = ((center - support + 0.5) as i64).max(0);
    let xmax = ((center + support + 0.5) as i64).min(in_len as i64);
    let mut weights: Vec<f64> = (xmin..xmax).map(|x| filter.weight((x as f64 - center + 0.5) * ss)).collect();
    let mut total = 0.0;
    for w in &weights {
        total += *w;
    }
    if total != 0.0 {
        for w in &mut weights {
            *w /= total;
        }
    }
    (xmin as usize, weights)
}

/// Pillow's `normalize_coeffs_8bpc`: round half away from zero, then truncate.
pub fn fixed_point(weight: f64) -> i32 {
    let scaled = weight * (1i32 << PRECISION_BITS) as f64;
    if weight < 0.0 {
        (-0.5 + scaled) as i32
    } else {
        (0.5 + scaled) as i32
    }
}

/// Fixed-point taps for a run of consecutive output indices of one axis. Every window is
/// stored with the same number of taps (`taps`), shifted inside the input and padded with
/// zero weights, so the inner loops have a fixed length; zero taps add nothing.
#[derive(Clone, Debug)]
pub struct AxisCoefficients {
    /// First input index read by each output index (relative to `input_origin`).
    pub starts: Vec<usize>,
    pub taps: usize,
    /// `starts.len() * taps` fixed-point weights.
    pub weights: Vec<i32>,
}

impl AxisCoefficients {
    /// Coefficients of the outputs `outputs` (a sub-range of `0..out_len`).
    pub fn new(in_len: usize, out_len: usize, outputs: Range<usize>, filter: Interpolation) -> Self {
        debug_assert!(outputs.end <= out_len && in_len > 0);
        let (scale, filterscale, support) = axis_scale(in_len, out_len, filter);
        // Pillow's `ksize = (int)ceil(support) * 2 + 1`, never more than the input.
        let taps = ((support.ceil() as usize) * 2 + 1).min(in_len);
        let mut starts = Vec::with_capacity(outputs.len());
        let mut weights = vec![0i32; outputs.len() * taps];
        for (row, o) in outputs.enumerate() {
            let (xmin, ws) = window(in_len, scale, filterscale, support, o, filter);
            debug_assert!(ws.len() <= taps);
            let start = xmin.min(in_len - taps);
            let shift = xmin - start;
            let dst = &mut weights[row * taps..(row + 1) * taps];
            for (i, w) in ws.iter().enumerate() {
                dst[shift + i] = fixed_point(*w);
            }
            starts.push(start);
        }
        AxisCoefficients { starts, taps, weights }
    }

    /// The input indices any of these outputs reads.
    pub fn input_range(&self) -> Range<usize> {
        match (self.starts.iter().min(), self.starts.iter().max()) {
            (Some(&lo), Some(&hi)) => lo..hi + self.taps,
            _ => 0..0,
        }
    }

    /// Re-base the windows on an input that starts at `origin` (a sub-range of the axis).
    pub fn rebase(&mut self, origin: usize) {
        for s in &mut self.starts {
            *s -= origin;
        }
    }

    fn taps_of(&self, index: usize) -> &[i32] {
        &self.weights[index * self.taps..(index + 1) * self.taps]
    }
}

/// Pillow's `clip8`: `acc >> 22` clamped to 0..=255 (the shift is arithmetic).
#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A borrowed RGB8 plane: `rows` rows of `width` pixels, row `r` at `data[r * stride..]`.
#[derive(Clone, Copy)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    pub stride: usize,
    /// Pixel offset of column 0 inside each row.
    pub x0: usize,
    pub width: usize,
    pub rows: usize,
}

impl<'a> Plane<'a> {
    #[inline(always)]
    fn row(&self, r: usize) -> &'a [u8] {
        let start = r * self.stride + self.x0 * 3;
        &self.data[start..start + self.width * 3]
    }
}

/// Rows resampled together by the horizontal pass. The block is transposed so that every
/// input column holds `BLOCK` pixels contiguously: one output column of the whole block is then
/// a run of multiply-adds over `3 * BLOCK` contiguous bytes with one weight per tap, which the
/// compiler vectorizes (the integer arithmetic, hence the result, is unchanged).
const BLOCK: usize = 16;
const LANES: usize = 3 * BLOCK;
/// Bytes per transposed column: the lanes, plus room for the 4-byte stores of the transpose.
const COLUMN: usize = LANES + 16;
/// Columns transposed at a time (16 KiB).
const TILE: usize = 256;

/// Horizontal pass: for each of `src`'s rows, the outputs described by `coeffs` (their starts
/// are column indices in `src`). Writes `src.rows x coeffs.starts.len()` RGB8 pixels.
pub fn horizontal_pass(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], columns: &mut Vec<u8>) {
    debug_assert_eq!(dst.len(), src.rows * coeffs.starts.len() * 3);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { horizontal_pass_avx2(src, coeffs, dst, columns) };
    }
    horizontal_pass_generic(src, coeffs, dst, columns)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_pass_avx2(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], columns: &mut Vec<u8>) {
    horizontal_pass_generic(src, coeffs, dst, columns)
}

#[inline(always)]
fn horizontal_pass_generic(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], columns: &mut Vec<u8>) {
    let out_w = coeffs.starts.len();
    if out_w == 0 || src.rows == 0 {
        return;
    }
    columns.clear();
    columns.resize(src.width * COLUMN, 0);
    for first_row in (0..src.rows).step_by(BLOCK) {
        let n = BLOCK.min(src.rows - first_row);
        // Transposed in tiles of columns that stay in L1 while the block's rows are written.
        for tile in (0..src.width).step_by(TILE) {
            let tile_end = (tile + TILE).min(src.width);
            let tile_columns = &mut columns[tile * COLUMN..tile_end * COLUMN];
            for r in 0..n {
                let row = &src.row(first_row + r)[tile * 3..];
                // Each pixel is copied as 4 bytes (its RGB and the next pixel's R): the extra
                // byte lands on row r + 1's R, written afterwards, or on the column's padding.
                // The row's last pixel has no next pixel to read, so it is copied as 3 bytes.
                let full = if tile_end == src.width { tile_end - tile - 1 } else { tile_end - tile };
                for (column, four) in tile_columns.chunks_exact_mut(COLUMN).zip(row.windows(4).step_by(3)).take(full) {
                    column[r * 3..r * 3 + 4].copy_from_slice(four);
                }
                if full < tile_end - tile {
                    let column = &mut tile_columns[full * COLUMN..];
                    column[r * 3..r * 3 + 3].copy_from_slice(&row[full * 3..full * 3 + 3]);
                }
            }
        }
        let out_rows = &mut dst[first_row * out_w * 3..(first_row + n) * out_w * 3];
        for o in 0..out_w {
            let start = coeffs.starts[o];
            let mut acc = [ROUNDING; LANES];
            for (t, &w) in coeffs.taps_of(o).iter().enumerate() {
                if w == 0 {
                    continue;
                }
                let column: &[u8; LANES] = columns[(start + t) * COLUMN..(start + t) * COLUMN + LANES].try_into().unwrap();
                for (a, &p) in acc.iter_mut().zip(column) {
                    *a += p as i32 * w;
                }
            }
            for r in 0..n {
                let out = &mut out_rows[(r * out_w + o) * 3..(r * out_w + o) * 3 + 3];
                out[0] = clip8(acc[r * 3]);
                out[1] = clip8(acc[r * 3 + 1]);
                out[2] = clip8(acc[r * 3 + 2]);
            }
        }
    }
}

/// Vertical pass: the outputs described by `coeffs` (starts are row indices in `src`), over all
/// of `src`'s columns. Writes `coeffs.starts.len() x src.width` RGB8 pixels. `acc` is scratch.
pub fn vertical_pass(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], acc: &mut Vec<i32>) {
    debug_assert_eq!(dst.len(), coeffs.starts.len() * src.width * 3);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { vertical_pass_avx2(src, coeffs, dst, acc) };
    }
    vertical_pass_generic(src, coeffs, dst, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_pass_avx2(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], acc: &mut Vec<i32>) {
    vertical_pass_generic(src, coeffs, dst, acc)
}

#[inline(always)]
fn vertical_pass_generic(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], acc: &mut Vec<i32>) {
    let n = src.width * 3;
    if n == 0 {
        return;
    }
    acc.clear();
    acc.resize(n, 0);
    for (o, out_row) in dst.chunks_exact_mut(n).enumerate() {
        acc.fill(ROUNDING);
        let start = coeffs.starts[o];
        for (t, &w) in coeffs.taps_of(o).iter().enumerate() {
            if w == 0 {
                continue;
            }
            let row = src.row(start + t);
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * w;
            }
        }
        for (d, &a) in out_row.iter_mut().zip(acc.iter()) {
            *d = clip8(a);
        }
    }
}

/// Buffers reused by the calls on one thread: fresh large allocations would be fresh pages
/// (page faults and zeroing) on every image.
#[derive(Default)]
pub struct Scratch {
    pub columns: Vec<u8>,
    pub acc: Vec<i32>,
    pub tmp: Vec<u8>,
    pub out: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Buffers kept between calls are dropped above this size (a huge image should not pin memory).
const KEEP_BYTES: usize = 32 << 20;

impl Scratch {
    /// This thread's buffers (empty ones if another call holds them).
    pub fn take() -> Scratch {
        SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    /// Hand the buffers back for the next call on this thread.
    pub fn give_back(mut self) {
        fn trim<T>(v: &mut Vec<T>) {
            if v.capacity() * std::mem::size_of::<T>() > KEEP_BYTES {
                *v = Vec::new();
            }
        }
        trim(&mut self.columns);
        trim(&mut self.acc);
        trim(&mut self.tmp);
        trim(&mut self.out);
        SCRATCH.with(|s| *s.borrow_mut() = self);
    }
}

/// `buf` resized to `len` bytes, reusing its allocation.
pub fn sized(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    buf.clear();
    buf.resize(len, 0);
    &mut buf[..]
}
