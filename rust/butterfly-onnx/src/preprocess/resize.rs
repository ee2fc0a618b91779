//! Pillow's 8-bit resampling (`src/libImaging/Resample.c`), one axis at a time.
//!
//! Coefficients are computed in f64 exactly as `precompute_coeffs` does, then turned into
//! fixed point with `PRECISION_BITS = 22` as `normalize_coeffs_8bpc` does; the pixel passes
//! accumulate in i32 from `1 << 21` and clip `acc >> 22` to 0..=255 (Pillow's `clip8`).
//! Only the output indices that survive the center crop are computed: every output value
//! depends on its own window alone, so the values are identical.

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;

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

/// The cache key of one axis's coefficients.
type AxisKey = (usize, usize, usize, usize, Interpolation);
/// A cached axis: its key, its re-based coefficients and the input range they read.
type CachedAxis = (AxisKey, Rc<AxisCoefficients>, Range<usize>);

thread_local! {
    /// Recently used axes on this thread (a dataset's images mostly share a few sizes).
    static AXES: RefCell<Vec<CachedAxis>> = const { RefCell::new(Vec::new()) };
}

/// Axes kept per thread.
const AXES_KEPT: usize = 8;

/// The coefficients of `outputs` of an axis `in_len -> out_len`, re-based on the input range
/// they read (returned with them), shared with earlier calls on this thread for the same axis.
pub fn rebased_axis(
    in_len: usize,
    out_len: usize,
    outputs: Range<usize>,
    filter: Interpolation,
) -> (Rc<AxisCoefficients>, Range<usize>) {
    let key = (in_len, out_len, outputs.start, outputs.end, filter);
    AXES.with(|axes| {
        let mut axes = axes.borrow_mut();
        let entry = match axes.iter().position(|(k, _, _)| *k == key) {
            Some(position) => axes.remove(position),
            None => {
                let mut coeffs = AxisCoefficients::new(in_len, out_len, outputs, filter);
                let used = coeffs.input_range();
                coeffs.rebase(used.start);
                (key, Rc::new(coeffs), used)
            }
        };
        let result = (entry.1.clone(), entry.2.clone());
        axes.insert(0, entry);
        axes.truncate(AXES_KEPT);
        result
    })
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

/// Horizontal pass: for each of `src`'s rows, the outputs described by `coeffs` (their starts
/// are column indices in `src`). Writes `src.rows x coeffs.starts.len()` RGB8 pixels.
///
/// With AVX2 each output pixel of a row is computed in place from the interleaved RGB bytes,
/// four taps and four rows per step (see `horizontal_pass_avx2`); no transposed copy of the
/// input is made. `scratch` keeps the kernel's weight table (and padded copies of the last rows)
/// between calls.
pub fn horizontal_pass(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], scratch: &mut HorizontalScratch) {
    // Checked in release too: the SIMD kernels write through raw pointers (once per pass).
    assert_eq!(dst.len(), src.rows * coeffs.starts.len() * 3, "horizontal_pass: dst has the wrong length");
    let out_w = coeffs.starts.len();
    if out_w == 0 || src.rows == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && scratch.prepare_avx2(coeffs, src.width) {
        #[cfg(butterfly_avx512)]
        if scratch.digit_quads > 0
            && scratch.groups.is_empty()
            && !scratch.avoids_vnni()
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU supports AVX2, AVX-512 VL and VNNI; `prepare_digits` checked the windows.
            return unsafe { horizontal_pass_vnni(src, out_w, dst, scratch) };
        }
        // SAFETY: the CPU supports AVX2 (checked just above); `prepare_avx2` checked the windows.
        return unsafe { horizontal_pass_avx2(src, out_w, dst, scratch) };
    }
    horizontal_pass_scalar(src, coeffs, dst)
}

/// Pillow's `ImagingResampleHorizontal_8bpc`, one row and one output pixel at a time.
fn horizontal_pass_scalar(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8]) {
    let out_w = coeffs.starts.len();
    for (r, out_row) in dst.chunks_exact_mut(out_w * 3).enumerate().take(src.rows) {
        let row = src.row(r);
        for (o, out) in out_row.chunks_exact_mut(3).enumerate() {
            let start = coeffs.starts[o];
            let mut acc = [ROUNDING; 3];
            for (t, &w) in coeffs.taps_of(o).iter().enumerate() {
                let px = &row[(start + t) * 3..(start + t) * 3 + 3];
                acc[0] += px[0] as i32 * w;
                acc[1] += px[1] as i32 * w;
                acc[2] += px[2] as i32 * w;
            }
            out[0] = clip8(acc[0]);
            out[1] = clip8(acc[1]);
            out[2] = clip8(acc[2]);
        }
    }
}

/// The horizontal pass's reusable state: the weights rearranged for the SIMD kernel and
/// zero-padded copies of rows whose last loads would run past the end of the input slice.
#[derive(Default)]
pub struct HorizontalScratch {
    /// Per output pixel: for each pair of taps (a, b), the high parts (`w >> 11`) and the low
    /// parts (`w & 0x7ff`) as 8 i16 `[a, b, a, b, a, b, 0, 0]` (the layout of the shuffled
    /// pixels). Pairs go by quads, `[hi01, hi23, lo01, lo23]`, then a last `[hi, lo]` pair
    /// when the number of pairs is odd.
    weights: Vec<[i16; 8]>,
    /// First input pixel of each output's taps (leading zero taps dropped).
    starts: Vec<usize>,
    /// Quads of taps and trailing pairs (0 or 1) per output.
    quads: usize,
    pair: usize,
    /// Two-tap windows only, when every 4 consecutive outputs read within 5 pixels: per group
    /// of 4 outputs, 3 pshufb masks then the 3 high and the 3 low weight vectors (see
    /// `horizontal_rows4_grouped_avx2`); empty otherwise.
    groups: Vec<[u8; 16]>,
    /// First input pixel of each group's 16-byte load.
    group_bases: Vec<usize>,
    /// The AVX-512 VNNI layout (`horizontal_rows4_vnni`): per output and quad of taps, the
    /// weights' 3 signed base-256 digits as 3 vectors of `[d(w0) d(w1) d(w2) d(w3)]` per channel
    /// (and 4 zero bytes); its own first input pixels; quads per output (0: not built).
    digits: Vec<[i8; 16]>,
    digit_starts: Vec<usize>,
    #[cfg_attr(not(butterfly_avx512), allow(dead_code))]
    digit_quads: usize,
    /// Zero-padded copies of the last rows (whose loads would run past the input slice).
    padded_row: Vec<u8>,
    /// Tests: use the AVX2 kernels even where VNNI is available.
    #[cfg(test)]
    avoid_vnni: bool,
    /// The coefficients and row width `weights` were prepared from (width 0: none).
    prepared_width: usize,
    prepared_starts: Vec<usize>,
    prepared_weights: Vec<i32>,
}

impl HorizontalScratch {
    /// Lay out `coeffs` for the SIMD kernel on rows of `width` pixels; false when a window
    /// padded to an even number of taps does not fit in the row (tiny inputs use the scalar
    /// pass). Zero taps at either end of a window are dropped (they add nothing): bilinear
    /// upscaling then needs 2 taps instead of Pillow's 3.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[cfg(test)]
    #[cfg_attr(not(butterfly_avx512), allow(dead_code))]
    fn avoids_vnni(&self) -> bool {
        self.avoid_vnni
    }

    #[cfg(not(test))]
    #[allow(dead_code)]
    fn avoids_vnni(&self) -> bool {
        false
    }

    fn prepare_avx2(&mut self, coeffs: &AxisCoefficients, width: usize) -> bool {
        if self.prepared_width == width
            && self.prepared_starts == coeffs.starts
            && self.prepared_weights == coeffs.weights
        {
            return true; // the same axis as the previous call (the next image of a dataset)
        }
        self.prepared_width = 0;
        let n = coeffs.starts.len();
        let nonzero = |o: usize| {
            let taps = coeffs.taps_of(o);
            match (taps.iter().position(|&w| w != 0), taps.iter().rposition(|&w| w != 0)) {
                (Some(first), Some(last)) => (first, last + 1),
                _ => (0, 1),
            }
        };
        let used = (0..n).map(|o| nonzero(o).1 - nonzero(o).0).max().unwrap_or(1);
        let pairs = used.div_ceil(2);
        let padded = pairs * 2;
        if padded > width {
            return false;
        }
        (self.quads, self.pair) = (pairs / 2, pairs % 2);
        self.starts.clear();
        self.weights.clear();
        let mut taps = vec![0i32; padded];
        let mut two_taps = Vec::new();
        for o in 0..n {
            let (first, last) = nonzero(o);
            // Shift the window left when its padding would run past the row; zero taps add nothing.
            let start = (coeffs.starts[o] + first).min(width - padded);
            let shift = coeffs.starts[o] + first - start;
            taps.fill(0);
            taps[shift..shift + last - first].copy_from_slice(&coeffs.taps_of(o)[first..last]);
            self.starts.push(start);
            if padded == 2 {
                two_taps.push([taps[0], taps[1]]);
            }
            // w = hi * 2^11 + lo with 0 <= lo < 2^11; |hi| < 2^15 for any normalized weight
            // (|w| < 2^26), so both fit in i16.
            let hi = |w: i32| (w >> 11) as i16;
            let lo = |w: i32| (w & 0x7ff) as i16;
            let vector = |part: &dyn Fn(i32) -> i16, pair: &[i32]| {
                let (a, b) = (part(pair[0]), part(pair[1]));
                [a, b, a, b, a, b, 0, 0]
            };
            for quad in taps.chunks_exact(4) {
                let (p01, p23) = quad.split_at(2);
                self.weights.extend([vector(&hi, p01), vector(&hi, p23), vector(&lo, p01), vector(&lo, p23)]);
            }
            if self.pair == 1 {
                let last_pair = &taps[padded - 2..];
                self.weights.extend([vector(&hi, last_pair), vector(&lo, last_pair)]);
            }
        }
        self.prepare_groups(&two_taps);
        self.prepare_digits(coeffs, width, used, &nonzero);
        self.prepared_width = width;
        self.prepared_starts.clone_from(&coeffs.starts);
        self.prepared_weights.clone_from(&coeffs.weights);
        true
    }

    /// The VNNI layout of `coeffs` (windows of at most `used` nonzero taps, `nonzero(o)` their
    /// range): taps padded to a multiple of 4, each weight split exactly into signed bytes
    /// `w = d0 + 2^8 d1 + 2^16 d2`. Not built (`digit_quads = 0`) when a padded window does not
    /// fit in the row or a top digit does not fit in i8 (|w| >= 2^23, not a normalized weight).
    fn prepare_digits(
        &mut self,
        coeffs: &AxisCoefficients,
        width: usize,
        used: usize,
        nonzero: &dyn Fn(usize) -> (usize, usize),
    ) {
        self.digits.clear();
        self.digit_starts.clear();
        self.digit_quads = 0;
        let quads = used.div_ceil(4);
        let padded = quads * 4;
        if padded > width {
            return;
        }
        let mut taps = vec![0i32; padded];
        for o in 0..coeffs.starts.len() {
            let (first, last) = nonzero(o);
            let start = (coeffs.starts[o] + first).min(width - padded);
            let shift = coeffs.starts[o] + first - start;
            taps.fill(0);
            taps[shift..shift + last - first].copy_from_slice(&coeffs.taps_of(o)[first..last]);
            self.digit_starts.push(start);
            for quad in taps.chunks_exact(4) {
                let mut vectors = [[0i8; 16]; 3];
                for (t, &w) in quad.iter().enumerate() {
                    let d0 = w as i8;
                    let rest = (w - d0 as i32) >> 8;
                    let d1 = rest as i8;
                    let d2 = (rest - d1 as i32) >> 8;
                    let Ok(d2) = i8::try_from(d2) else {
                        self.digits.clear();
                        self.digit_starts.clear();
                        return;
                    };
                    for channel in 0..3 {
                        vectors[0][channel * 4 + t] = d0;
                        vectors[1][channel * 4 + t] = d1;
                        vectors[2][channel * 4 + t] = d2;
                    }
                }
                self.digits.extend(vectors);
            }
        }
        self.digit_quads = quads;
    }

    /// The grouped layout of two-tap windows (`two_taps`, one pair per output; empty when the
    /// windows are wider): for 4 consecutive outputs whose taps all lie within the 5 pixels of
    /// one 16-byte load, the 12 values `(output, channel)` in output order, each a pair of
    /// 16-bit `(pixel at tap 0, pixel at tap 1)` picked by `pshufb`, in 3 vectors of 4. The last
    /// group repeats the last output. Left empty when some group does not fit.
    fn prepare_groups(&mut self, two_taps: &[[i32; 2]]) {
        self.groups.clear();
        self.group_bases.clear();
        let n = two_taps.len();
        if n == 0 || n != self.starts.len() {
            return;
        }
        for first in (0..n).step_by(4) {
            let output = |i: usize| (first + i).min(n - 1);
            let base = (0..4).map(|i| self.starts[output(i)]).min().unwrap_or(0);
            if (0..4).any(|i| self.starts[output(i)] - base > 3) {
                self.groups.clear();
                self.group_bases.clear();
                return;
            }
            let mut vectors = [[0u8; 16]; 9];
            for value in 0..12 {
                let (o, channel) = (output(value / 3), value % 3);
                let (k, word) = (value / 4, (value % 4) * 2);
                for (t, &w) in two_taps[o].iter().enumerate() {
                    let byte = 2 * (word + t);
                    vectors[k][byte] = ((self.starts[o] - base + t) * 3 + channel) as u8;
                    vectors[k][byte + 1] = 0x80; // pshufb: zero high byte
                    vectors[3 + k][byte..byte + 2].copy_from_slice(&((w >> 11) as i16).to_le_bytes());
                    vectors[6 + k][byte..byte + 2].copy_from_slice(&((w & 0x7ff) as i16).to_le_bytes());
                }
            }
            self.groups.extend(vectors);
            self.group_bases.push(base);
        }
    }
}

/// The AVX2 horizontal pass over all rows (weights prepared by `prepare_avx2`).
///
/// Four rows at a time, two 256-bit registers holding one row in each 128-bit lane: for one
/// output pixel and 4 taps, the 16 bytes at the first tap's pixel of each row are shuffled into
/// 16-bit `[R0 R1 G0 G1 B0 B1 0 0]` and `[R2 R3 G2 G3 B2 B3 0 0]`; `pmaddwd` with the weights'
/// high parts and with their low parts gives `p0*w0 + p1*w1` per channel. Each weight vector is
/// loaded once for the four rows. The exact 32-bit sum of Pillow's loop is then
/// `2^21 + (sum_hi << 11) + sum_lo` (the split is exact: `w = (w >> 11) * 2^11 + (w & 0x7ff)`),
/// shifted by 22 and clamped to 0..=255 by the saturating packs, as `clip8` does. The rows are
/// walked in order (the input streams through once); the weights of all outputs stay in cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_pass_avx2(src: Plane<'_>, out_w: usize, dst: &mut [u8], scratch: &mut HorizontalScratch) {
    match (scratch.quads, scratch.pair) {
        (0, 1) => horizontal_rows_avx2::<0, 1>(src, out_w, dst, scratch),
        (1, 0) => horizontal_rows_avx2::<1, 0>(src, out_w, dst, scratch),
        (1, 1) => horizontal_rows_avx2::<1, 1>(src, out_w, dst, scratch),
        (2, 0) => horizontal_rows_avx2::<2, 0>(src, out_w, dst, scratch),
        (2, 1) => horizontal_rows_avx2::<2, 1>(src, out_w, dst, scratch),
        (3, 0) => horizontal_rows_avx2::<3, 0>(src, out_w, dst, scratch),
        (3, 1) => horizontal_rows_avx2::<3, 1>(src, out_w, dst, scratch),
        (_, 0) => horizontal_rows_avx2::<{ usize::MAX }, 0>(src, out_w, dst, scratch),
        _ => horizontal_rows_avx2::<{ usize::MAX }, 1>(src, out_w, dst, scratch),
    }
}

/// Rows computed together by the AVX2 kernel (they share each weight load).
const ROWS_PER_STEP: usize = 4;

/// `Q` quads of taps (`usize::MAX`: `scratch.quads`, not known at compile time) and `P`
/// trailing pairs per output.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_rows_avx2<const Q: usize, const P: usize>(
    src: Plane<'_>,
    out_w: usize,
    dst: &mut [u8],
    scratch: &mut HorizontalScratch,
) {
    let quads = if Q == usize::MAX { scratch.quads } else { Q };
    // Bytes a row's loads may read, from its column 0: up to the last 16-byte load.
    let max_start = scratch.starts.iter().copied().max().unwrap_or(0);
    let last_load = (quads * 4 + P * 2).saturating_sub(if P == 1 { 2 } else { 4 });
    let reach = (max_start + last_load) * 3 + 16;
    // Two-tap windows 4 outputs per step when their layout was built (its loads start at or
    // before each group's first window, so `reach` covers them).
    let grouped = Q == 0 && P == 1 && !scratch.groups.is_empty();
    row_quads(src, out_w, dst, scratch, reach, |scratch, rows, outs| {
        if grouped {
            horizontal_rows4_grouped_avx2(rows, outs, out_w, scratch);
        } else {
            horizontal_rows4_avx2::<Q, P>(rows, outs, out_w, scratch);
        }
    });
}

/// Hands `kernel` all rows of `src`, four at a time, with the output row of each (`out_w`
/// pixels in `dst`). Rows are read in place while their loads, up to `reach` bytes from
/// column 0, stay inside the slice (only the last rows can fail); the rest, at most 3 + the
/// rows that do not fit, from zero-padded copies (`scratch.padded_row`), a short group
/// repeating its last row (the repeated row's bytes are written twice, equal).
#[cfg(target_arch = "x86_64")]
unsafe fn row_quads(
    src: Plane<'_>,
    out_w: usize,
    dst: &mut [u8],
    scratch: &mut HorizontalScratch,
    reach: usize,
    mut kernel: impl FnMut(&HorizontalScratch, [*const u8; 4], [*mut u8; 4]),
) {
    let mut padded = std::mem::take(&mut scratch.padded_row);
    let row_bytes = out_w * 3;
    let fits = |r: usize| r * src.stride + src.x0 * 3 + reach <= src.data.len();
    let row_ptr = |r: usize| src.data.as_ptr().add(r * src.stride + src.x0 * 3);
    let out_ptr = dst.as_mut_ptr();
    let in_place = (0..src.rows).take_while(|&r| fits(r)).count() / ROWS_PER_STEP * ROWS_PER_STEP;
    for r in (0..in_place).step_by(ROWS_PER_STEP) {
        let rows = [row_ptr(r), row_ptr(r + 1), row_ptr(r + 2), row_ptr(r + 3)];
        kernel(scratch, rows, [0, 1, 2, 3].map(|i| out_ptr.add((r + i) * row_bytes)));
    }
    let padded_len = reach.max(src.width * 3);
    for first in (in_place..src.rows).step_by(ROWS_PER_STEP) {
        let group = first..(first + ROWS_PER_STEP).min(src.rows);
        padded.clear();
        for r in group.clone() {
            padded.extend_from_slice(src.row(r));
            padded.resize((r - first + 1) * padded_len, 0);
        }
        let last = group.len() - 1;
        let rows = [0, 1, 2, 3].map(|i| padded.as_ptr().add(i.min(last) * padded_len));
        kernel(scratch, rows, [0, 1, 2, 3].map(|i| out_ptr.add((first + i.min(last)) * row_bytes)));
    }
    scratch.padded_row = padded;
}

/// All outputs of the four rows `rows`, written at `outs`. Each row must be readable up to the
/// last 16-byte load of the windows, and each `outs[i]` writable for `out_w * 3` bytes; equal
/// rows may share an output.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn horizontal_rows4_avx2<const Q: usize, const P: usize>(
    rows: [*const u8; 4],
    outs: [*mut u8; 4],
    out_w: usize,
    scratch: &HorizontalScratch,
) {
    use std::arch::x86_64::*;
    let quads = if Q == usize::MAX { scratch.quads } else { Q };
    let per_output = quads * 4 + P * 2;
    let z = -1i8; // pshufb: a negative index writes 0
    let mask01 = _mm256_setr_epi8(
        0, z, 3, z, 1, z, 4, z, 2, z, 5, z, z, z, z, z, //
        0, z, 3, z, 1, z, 4, z, 2, z, 5, z, z, z, z, z,
    );
    let mask23 = _mm256_setr_epi8(
        6, z, 9, z, 7, z, 10, z, 8, z, 11, z, z, z, z, z, //
        6, z, 9, z, 7, z, 10, z, 8, z, 11, z, z, z, z, z,
    );
    let rounding = _mm256_setr_epi32(ROUNDING, ROUNDING, ROUNDING, 0, ROUNDING, ROUNDING, ROUNDING, 0);
    let [a, b, c, d] = rows;
    let load_rows = |x: *const u8, y: *const u8, offset: usize| {
        _mm256_loadu2_m128i(y.add(offset) as *const __m128i, x.add(offset) as *const __m128i)
    };
    let weight = |w: *const __m128i| _mm256_broadcastsi128_si256(_mm_loadu_si128(w));
    let weights = scratch.weights.as_ptr() as *const __m128i;
    for o in 0..out_w {
        let start = *scratch.starts.get_unchecked(o) * 3;
        let w = weights.add(o * per_output);
        let (mut hi_ab, mut hi_cd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let (mut lo_ab, mut lo_cd) = (rounding, rounding);
        for q in 0..quads {
            let offset = start + q * 12;
            let (ab, cd) = (load_rows(a, b, offset), load_rows(c, d, offset));
            let wq = w.add(q * 4);
            let (h01, h23, l01, l23) = (weight(wq), weight(wq.add(1)), weight(wq.add(2)), weight(wq.add(3)));
            let (ab01, ab23) = (_mm256_shuffle_epi8(ab, mask01), _mm256_shuffle_epi8(ab, mask23));
            let (cd01, cd23) = (_mm256_shuffle_epi8(cd, mask01), _mm256_shuffle_epi8(cd, mask23));
            hi_ab =
                _mm256_add_epi32(hi_ab, _mm256_add_epi32(_mm256_madd_epi16(ab01, h01), _mm256_madd_epi16(ab23, h23)));
            lo_ab =
                _mm256_add_epi32(lo_ab, _mm256_add_epi32(_mm256_madd_epi16(ab01, l01), _mm256_madd_epi16(ab23, l23)));
            hi_cd =
                _mm256_add_epi32(hi_cd, _mm256_add_epi32(_mm256_madd_epi16(cd01, h01), _mm256_madd_epi16(cd23, h23)));
            lo_cd =
                _mm256_add_epi32(lo_cd, _mm256_add_epi32(_mm256_madd_epi16(cd01, l01), _mm256_madd_epi16(cd23, l23)));
        }
        if P == 1 {
            let offset = start + quads * 12;
            let ab01 = _mm256_shuffle_epi8(load_rows(a, b, offset), mask01);
            let cd01 = _mm256_shuffle_epi8(load_rows(c, d, offset), mask01);
            let wp = w.add(quads * 4);
            let (h01, l01) = (weight(wp), weight(wp.add(1)));
            hi_ab = _mm256_add_epi32(hi_ab, _mm256_madd_epi16(ab01, h01));
            lo_ab = _mm256_add_epi32(lo_ab, _mm256_madd_epi16(ab01, l01));
            hi_cd = _mm256_add_epi32(hi_cd, _mm256_madd_epi16(cd01, h01));
            lo_cd = _mm256_add_epi32(lo_cd, _mm256_madd_epi16(cd01, l01));
        }
        let ab = _mm256_srai_epi32::<22>(_mm256_add_epi32(_mm256_slli_epi32::<11>(hi_ab), lo_ab));
        let cd = _mm256_srai_epi32::<22>(_mm256_add_epi32(_mm256_slli_epi32::<11>(hi_cd), lo_cd));
        store_pixels4(outs, o, out_w, ab, cd);
    }
}

/// Output pixel `o` of four rows from the shifted 32-bit sums `[R G B 0]` of rows a and b (one
/// per 128-bit lane of `ab`) and c and d (`cd`), clamped to 0..=255 by the saturating packs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_pixels4(
    outs: [*mut u8; 4],
    o: usize,
    out_w: usize,
    ab: std::arch::x86_64::__m256i,
    cd: std::arch::x86_64::__m256i,
) {
    use std::arch::x86_64::*;
    // Per lane: a (or b) in bytes 0..4, c (or d) in bytes 4..8; the 4th byte of each is 0.
    let words = _mm256_packs_epi32(ab, cd);
    let bytes = _mm256_packus_epi16(words, words);
    let ac = _mm_cvtsi128_si64(_mm256_castsi256_si128(bytes)) as u64;
    let bd = _mm_cvtsi128_si64(_mm256_extracti128_si256::<1>(bytes)) as u64;
    let pixels = [ac as u32, bd as u32, (ac >> 32) as u32, (bd >> 32) as u32];
    for (out, px) in outs.iter().zip(pixels) {
        let px = px.to_le_bytes();
        if o + 1 < out_w {
            // 4 bytes: the 4th lands on the next pixel's R, written next.
            std::ptr::write_unaligned(out.add(o * 3) as *mut [u8; 4], px);
        } else {
            std::ptr::copy_nonoverlapping(px.as_ptr(), out.add(o * 3), 3);
        }
    }
}

/// Two-tap windows (bilinear upscaling), 4 outputs and 4 rows per step: one 16-byte load per
/// row and group, 3 `pshufb` that place the 12 `(output, channel)` pixel pairs in output order,
/// `pmaddwd` with the high and the low weight parts, `2^21 + (hi << 11) + lo` (Pillow's exact
/// sum, as in `horizontal_rows4_avx2`), shifted by 22 and packed with saturation into the 12
/// bytes of the 4 RGB pixels. No lane is padding.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn horizontal_rows4_grouped_avx2(
    rows: [*const u8; 4],
    outs: [*mut u8; 4],
    out_w: usize,
    scratch: &HorizontalScratch,
) {
    use std::arch::x86_64::*;
    let [a, b, c, d] = rows;
    let rounding = _mm256_set1_epi32(ROUNDING);
    let load_rows = |x: *const u8, y: *const u8, offset: usize| {
        _mm256_loadu2_m128i(y.add(offset) as *const __m128i, x.add(offset) as *const __m128i)
    };
    let vectors = scratch.groups.as_ptr() as *const __m128i;
    let row_bytes = out_w * 3;
    for (g, &base) in scratch.group_bases.iter().enumerate() {
        let v = vectors.add(g * 9);
        let vector = |k: usize| _mm256_broadcastsi128_si256(_mm_loadu_si128(v.add(k)));
        let (masks, his, los) =
            ([vector(0), vector(1), vector(2)], [vector(3), vector(4), vector(5)], [vector(6), vector(7), vector(8)]);
        let pixels = |px: __m256i| {
            let value = |k: usize| {
                let pairs = _mm256_shuffle_epi8(px, masks[k]);
                let (hi, lo) = (_mm256_madd_epi16(pairs, his[k]), _mm256_madd_epi16(pairs, los[k]));
                _mm256_srai_epi32::<22>(_mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32::<11>(hi), lo), rounding))
            };
            let (v0, v1, v2) = (value(0), value(1), value(2));
            // Per lane: the 12 bytes of the 4 pixels, then 4 repeated bytes.
            _mm256_packus_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v2))
        };
        let (ab, cd) = (pixels(load_rows(a, b, base * 3)), pixels(load_rows(c, d, base * 3)));
        let lanes = [
            _mm256_castsi256_si128(ab),
            _mm256_extracti128_si256::<1>(ab),
            _mm256_castsi256_si128(cd),
            _mm256_extracti128_si256::<1>(cd),
        ];
        let at = g * 12;
        for (out, lane) in outs.iter().zip(lanes) {
            if at + 16 <= row_bytes {
                // 16 bytes: the last 4 land on the next group's pixels, written next.
                _mm_storeu_si128(out.add(at) as *mut __m128i, lane);
            } else {
                let mut bytes = [0u8; 16];
                _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, lane);
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.add(at), row_bytes - at);
            }
        }
    }
}

/// The AVX-512 VNNI horizontal pass (256-bit registers; weights prepared by `prepare_digits`).
#[cfg(all(target_arch = "x86_64", butterfly_avx512))]
#[target_feature(enable = "avx2,avx512vl,avx512vnni")]
#[clippy::msrv = "1.89"] // compiled only on Rust >= 1.89 (build.rs)
unsafe fn horizontal_pass_vnni(src: Plane<'_>, out_w: usize, dst: &mut [u8], scratch: &mut HorizontalScratch) {
    match scratch.digit_quads {
        1 => horizontal_rows_vnni::<1>(src, out_w, dst, scratch),
        2 => horizontal_rows_vnni::<2>(src, out_w, dst, scratch),
        3 => horizontal_rows_vnni::<3>(src, out_w, dst, scratch),
        4 => horizontal_rows_vnni::<4>(src, out_w, dst, scratch),
        _ => horizontal_rows_vnni::<{ usize::MAX }>(src, out_w, dst, scratch),
    }
}

#[cfg(all(target_arch = "x86_64", butterfly_avx512))]
#[target_feature(enable = "avx2,avx512vl,avx512vnni")]
#[clippy::msrv = "1.89"] // compiled only on Rust >= 1.89 (build.rs)
unsafe fn horizontal_rows_vnni<const Q: usize>(
    src: Plane<'_>,
    out_w: usize,
    dst: &mut [u8],
    scratch: &mut HorizontalScratch,
) {
    let quads = if Q == usize::MAX { scratch.digit_quads } else { Q };
    let max_start = scratch.digit_starts.iter().copied().max().unwrap_or(0);
    let reach = (max_start + (quads - 1) * 4) * 3 + 16;
    row_quads(src, out_w, dst, scratch, reach, |scratch, rows, outs| {
        horizontal_rows4_vnni::<Q>(rows, outs, out_w, scratch)
    });
}

/// All outputs of four rows with `vpdpbusd` (unsigned pixel bytes times signed weight bytes,
/// 4 products summed into each 32-bit lane, no saturation): for one output and 4 taps, one
/// `pshufb` of the 16 bytes at the first tap's pixel gives `[R0 R1 R2 R3 G0.. B0.. 0 0 0 0]`
/// per row (two rows per register), and one `vpdpbusd` per weight digit accumulates
/// `sum p * d_k`. Pillow's exact 32-bit sum is `2^21 + S0 + (S1 << 8) + (S2 << 16)` (the split
/// `w = d0 + 2^8 d1 + 2^16 d2` is exact and the arithmetic wraps like the true sum, which fits
/// in i32), shifted by 22 and packed with saturation as in `horizontal_rows4_avx2`.
#[cfg(all(target_arch = "x86_64", butterfly_avx512))]
#[target_feature(enable = "avx2,avx512vl,avx512vnni")]
#[clippy::msrv = "1.89"] // compiled only on Rust >= 1.89 (build.rs)
#[inline]
unsafe fn horizontal_rows4_vnni<const Q: usize>(
    rows: [*const u8; 4],
    outs: [*mut u8; 4],
    out_w: usize,
    scratch: &HorizontalScratch,
) {
    use std::arch::x86_64::*;
    let quads = if Q == usize::MAX { scratch.digit_quads } else { Q };
    let z = -1i8;
    let mask = _mm256_setr_epi8(
        0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11, z, z, z, z, //
        0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11, z, z, z, z,
    );
    let rounding = _mm256_setr_epi32(ROUNDING, ROUNDING, ROUNDING, 0, ROUNDING, ROUNDING, ROUNDING, 0);
    let [a, b, c, d] = rows;
    let load_rows = |x: *const u8, y: *const u8, offset: usize| {
        _mm256_shuffle_epi8(_mm256_loadu2_m128i(y.add(offset) as *const __m128i, x.add(offset) as *const __m128i), mask)
    };
    let weight = |w: *const __m128i| _mm256_broadcastsi128_si256(_mm_loadu_si128(w));
    let digits = scratch.digits.as_ptr() as *const __m128i;
    for o in 0..out_w {
        let start = *scratch.digit_starts.get_unchecked(o) * 3;
        let w = digits.add(o * quads * 3);
        let (mut s0_ab, mut s1_ab, mut s2_ab) = (rounding, _mm256_setzero_si256(), _mm256_setzero_si256());
        let (mut s0_cd, mut s1_cd, mut s2_cd) = (rounding, _mm256_setzero_si256(), _mm256_setzero_si256());
        for q in 0..quads {
            let offset = start + q * 12;
            let (ab, cd) = (load_rows(a, b, offset), load_rows(c, d, offset));
            let wq = w.add(q * 3);
            let (d0, d1, d2) = (weight(wq), weight(wq.add(1)), weight(wq.add(2)));
            s0_ab = _mm256_dpbusd_epi32(s0_ab, ab, d0);
            s1_ab = _mm256_dpbusd_epi32(s1_ab, ab, d1);
            s2_ab = _mm256_dpbusd_epi32(s2_ab, ab, d2);
            s0_cd = _mm256_dpbusd_epi32(s0_cd, cd, d0);
            s1_cd = _mm256_dpbusd_epi32(s1_cd, cd, d1);
            s2_cd = _mm256_dpbusd_epi32(s2_cd, cd, d2);
        }
        let sum = |s0, s1, s2| {
            let high = _mm256_add_epi32(_mm256_slli_epi32::<8>(s1), _mm256_slli_epi32::<16>(s2));
            _mm256_srai_epi32::<22>(_mm256_add_epi32(s0, high))
        };
        store_pixels4(outs, o, out_w, sum(s0_ab, s1_ab, s2_ab), sum(s0_cd, s1_cd, s2_cd));
    }
}

/// Vertical pass: the outputs described by `coeffs` (starts are row indices in `src`), over all
/// of `src`'s columns. Writes `coeffs.starts.len() x src.width` RGB8 pixels. `acc` is scratch.
pub fn vertical_pass(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], acc: &mut Vec<i32>) {
    assert_eq!(dst.len(), coeffs.starts.len() * src.width * 3, "vertical_pass: dst has the wrong length");
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
    pub horizontal: HorizontalScratch,
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
        trim(&mut self.horizontal.weights);
        trim(&mut self.horizontal.padded_row);
        trim(&mut self.acc);
        trim(&mut self.tmp);
        trim(&mut self.out);
        SCRATCH.with(|s| *s.borrow_mut() = self);
    }
}

/// The first `len` bytes of `buf`, grown when needed but never cleared: every byte handed out
/// is overwritten by the pass that receives it, so zero-filling it on each call would be waste.
pub fn sized(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (tests must not depend on a crate's random stream).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The SIMD horizontal pass gives the scalar pass's bytes (the scalar pass is Pillow's
    /// loop, checked against Pillow itself in tests/preprocess_pillow.rs) for random sizes,
    /// sub-ranges of outputs, both filters, planes with offsets and strides, row counts that are
    /// and are not multiples of the kernel's four, and inputs that end exactly at the last pixel
    /// (the padded-row path).
    #[test]
    fn horizontal_pass_matches_the_scalar_loop() {
        // Both SIMD tiers where the CPU has VNNI (the VNNI kernel first, then AVX2's).
        for avoid_vnni in [false, true] {
            let mut scratch = HorizontalScratch { avoid_vnni, ..HorizontalScratch::default() };
            horizontal_pass_matches_the_scalar_loop_with(&mut scratch);
        }
    }

    fn horizontal_pass_matches_the_scalar_loop_with(scratch: &mut HorizontalScratch) {
        let mut rng = Lcg(7);
        let mut sizes: Vec<(usize, usize)> =
            vec![(224, 256), (1920, 384), (1126, 224), (640, 256), (7, 300), (3, 2), (1, 5), (5, 1)];
        for _ in 0..300 {
            let wide = rng.below(4) == 0;
            let in_w = 1 + rng.below(if wide { 2000 } else { 40 });
            let up = rng.below(3) == 0;
            let out_w = 1 + rng.below(if up { 3 * in_w } else { in_w + 1 });
            sizes.push((in_w, out_w));
        }
        for (case, &(in_w, out_w)) in sizes.iter().enumerate() {
            let filter = if case % 2 == 0 { Interpolation::Bilinear } else { Interpolation::Bicubic };
            let first = rng.below(out_w);
            let outputs = first..first + 1 + rng.below(out_w - first);
            // 1..=13 rows: groups of four read in place, short tail groups, padded last rows.
            let rows = 1 + rng.below(13);
            let x0 = rng.below(3);
            let stride = (x0 + in_w + rng.below(2)) * 3;
            let len = (rows - 1) * stride + (x0 + in_w) * 3;
            let data: Vec<u8> = (0..len).map(|_| if rng.below(5) == 0 { 255 } else { rng.below(256) as u8 }).collect();
            let plane = Plane { data: &data, stride, x0, width: in_w, rows };
            let coeffs = AxisCoefficients::new(in_w, out_w, outputs.clone(), filter);
            let n = rows * outputs.len() * 3;
            let (mut fast, mut slow) = (vec![1u8; n], vec![2u8; n]);
            horizontal_pass(plane, &coeffs, &mut fast, scratch);
            horizontal_pass_scalar(plane, &coeffs, &mut slow);
            assert_eq!(fast, slow, "{in_w} -> {out_w}, outputs {outputs:?}, {rows} rows, {filter:?}");
        }
    }

    /// Bilinear upscaling takes the grouped two-tap kernel (4 outputs per step) and gives the
    /// scalar pass's bytes: output counts that are and are not multiples of 4, tiny widths,
    /// sub-ranges of outputs, 1..=9 rows, planes ending at the last pixel.
    #[test]
    fn grouped_two_tap_kernel_matches_the_scalar_loop() {
        let mut rng = Lcg(11);
        let mut scratch = HorizontalScratch::default();
        let sizes = [(224, 256), (2, 3), (2, 7), (3, 5), (5, 6), (7, 29), (100, 101), (256, 257), (640, 1027)];
        for &(in_w, out_w) in &sizes {
            for rows in 1..=9 {
                let first = if rows % 3 == 0 { rng.below(out_w) } else { 0 };
                let outputs = first..first + 1 + rng.below(out_w - first);
                let x0 = rows % 2;
                let stride = (x0 + in_w) * 3;
                let len = (rows - 1) * stride + (x0 + in_w) * 3;
                let data: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                let plane = Plane { data: &data, stride, x0, width: in_w, rows };
                let coeffs = AxisCoefficients::new(in_w, out_w, outputs.clone(), Interpolation::Bilinear);
                let n = rows * outputs.len() * 3;
                let (mut fast, mut slow) = (vec![1u8; n], vec![2u8; n]);
                horizontal_pass(plane, &coeffs, &mut fast, &mut scratch);
                horizontal_pass_scalar(plane, &coeffs, &mut slow);
                assert_eq!(fast, slow, "{in_w} -> {out_w}, outputs {outputs:?}, {rows} rows");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    assert!(!scratch.groups.is_empty(), "{in_w} -> {out_w}: grouped layout not used");
                }
            }
        }
    }
}
