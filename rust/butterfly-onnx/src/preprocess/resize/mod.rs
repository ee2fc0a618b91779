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

// The per-ISA kernels, chosen at run time by CPU detection (the portable code is this file's).
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(all(target_arch = "x86_64", butterfly_avx512))]
mod avx512;

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
pub(crate) fn rebased_axis(
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
/// four taps and four rows per step (see `avx2::horizontal_pass_avx2`); no transposed copy of the
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
        if scratch.vnni.quads > 0
            && scratch.groups.is_empty()
            && !scratch.avoids_vnni()
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU supports AVX2, AVX-512 VL and VNNI; `VnniLayout::prepare` checked the windows.
            return unsafe { avx512::horizontal_pass_vnni(src, out_w, dst, scratch) };
        }
        // SAFETY: the CPU supports AVX2 (checked just above); `prepare_avx2` checked the windows.
        return unsafe { avx2::horizontal_pass_avx2(src, out_w, dst, scratch) };
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
// The layouts are read by the x86 kernels only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
    /// The AVX-512 VNNI layout (`avx512.rs`), when that kernel is compiled.
    #[cfg(all(target_arch = "x86_64", butterfly_avx512))]
    vnni: avx512::VnniLayout,
    /// Zero-padded copies of the last rows (whose loads would run past the input slice).
    padded_row: Vec<u8>,
    /// Tests: use the AVX2 kernels even where VNNI is available.
    #[cfg(test)]
    #[cfg_attr(not(all(target_arch = "x86_64", butterfly_avx512)), allow(dead_code))]
    avoid_vnni: bool,
    /// The coefficients and row width `weights` were prepared from (width 0: none).
    prepared_width: usize,
    prepared_starts: Vec<usize>,
    prepared_weights: Vec<i32>,
}

impl HorizontalScratch {
    /// Tests: whether to skip the VNNI kernel (to test the AVX2 one on the same CPU).
    #[cfg(all(test, target_arch = "x86_64", butterfly_avx512))]
    fn avoids_vnni(&self) -> bool {
        self.avoid_vnni
    }

    #[cfg(all(not(test), target_arch = "x86_64", butterfly_avx512))]
    fn avoids_vnni(&self) -> bool {
        false
    }
}

/// Vertical pass: the outputs described by `coeffs` (starts are row indices in `src`), over all
/// of `src`'s columns. Writes `coeffs.starts.len() x src.width` RGB8 pixels. `acc` is scratch.
pub fn vertical_pass(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], acc: &mut Vec<i32>) {
    assert_eq!(dst.len(), coeffs.starts.len() * src.width * 3, "vertical_pass: dst has the wrong length");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { avx2::vertical_pass_avx2(src, coeffs, dst, acc) };
    }
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
pub(crate) struct Scratch {
    pub(crate) horizontal: HorizontalScratch,
    pub(crate) acc: Vec<i32>,
    pub(crate) tmp: Vec<u8>,
    pub(crate) out: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Buffers kept between calls are dropped above this size (a huge image should not pin memory).
const KEEP_BYTES: usize = 32 << 20;

impl Scratch {
    /// This thread's buffers (empty ones if another call holds them).
    pub(crate) fn take() -> Scratch {
        SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    /// Hand the buffers back for the next call on this thread.
    pub(crate) fn give_back(mut self) {
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
pub(crate) fn sized(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
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
