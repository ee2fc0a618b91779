//! The AVX2 kernels of the resampler (x86-64, chosen at run time): the horizontal pass on
//! interleaved RGB with `pmaddwd` (weights split exactly into high and low 16-bit parts), the
//! grouped two-tap kernel for bilinear upscaling, and the portable vertical pass compiled for
//! AVX2. Each gives the bytes of the portable passes in mod.rs (tests there compare them).

use super::{vertical_pass_generic, AxisCoefficients, HorizontalScratch, Plane, ROUNDING};

impl HorizontalScratch {
    /// Lay out `coeffs` for the SIMD kernel on rows of `width` pixels; false when a window
    /// padded to an even number of taps does not fit in the row (tiny inputs use the scalar
    /// pass). Zero taps at either end of a window are dropped (they add nothing): bilinear
    /// upscaling then needs 2 taps instead of Pillow's 3.
    pub(super) fn prepare_avx2(&mut self, coeffs: &AxisCoefficients, width: usize) -> bool {
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
        #[cfg(butterfly_avx512)]
        self.vnni.prepare(coeffs, width, used, &nonzero);
        self.prepared_width = width;
        self.prepared_starts.clone_from(&coeffs.starts);
        self.prepared_weights.clone_from(&coeffs.weights);
        true
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
#[target_feature(enable = "avx2")]
pub(super) unsafe fn horizontal_pass_avx2(
    src: Plane<'_>,
    out_w: usize,
    dst: &mut [u8],
    scratch: &mut HorizontalScratch,
) {
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
pub(super) unsafe fn row_quads(
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
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn store_pixels4(
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

#[target_feature(enable = "avx2")]
/// The portable vertical pass, compiled with AVX2 enabled (the compiler vectorizes it).
pub(super) fn vertical_pass_avx2(src: Plane<'_>, coeffs: &AxisCoefficients, dst: &mut [u8], acc: &mut Vec<i32>) {
    vertical_pass_generic(src, coeffs, dst, acc)
}
