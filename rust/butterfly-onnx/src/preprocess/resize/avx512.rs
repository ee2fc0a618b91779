//! The AVX-512 VNNI kernel of the horizontal pass (x86-64 with AVX-512 VL + VNNI, chosen at
//! run time; compiled only where the compiler has these intrinsics, see build.rs): `vpdpbusd`
//! on pixel bytes and the weights split exactly into signed bytes. It gives the bytes of the
//! portable pass in mod.rs (tests there compare them).

use super::avx2::{row_quads, store_pixels4};
use super::{AxisCoefficients, HorizontalScratch, Plane, ROUNDING};

/// The VNNI layout (`horizontal_rows4_vnni`): per output and quad of taps, the weights' 3
/// signed base-256 digits as 3 vectors of `[d(w0) d(w1) d(w2) d(w3)]` per channel (and 4 zero
/// bytes); its own first input pixels; quads per output (0: not built).
#[derive(Default)]
pub(super) struct VnniLayout {
    digits: Vec<[i8; 16]>,
    starts: Vec<usize>,
    pub(super) quads: usize,
}

impl VnniLayout {
    /// The VNNI layout of `coeffs` (windows of at most `used` nonzero taps, `nonzero(o)` their
    /// range): taps padded to a multiple of 4, each weight split exactly into signed bytes
    /// `w = d0 + 2^8 d1 + 2^16 d2`. Not built (`quads = 0`) when a padded window does not
    /// fit in the row or a top digit does not fit in i8 (|w| >= 2^23, not a normalized weight).
    pub(super) fn prepare(
        &mut self,
        coeffs: &AxisCoefficients,
        width: usize,
        used: usize,
        nonzero: &dyn Fn(usize) -> (usize, usize),
    ) {
        self.digits.clear();
        self.starts.clear();
        self.quads = 0;
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
            self.starts.push(start);
            for quad in taps.chunks_exact(4) {
                let mut vectors = [[0i8; 16]; 3];
                for (t, &w) in quad.iter().enumerate() {
                    let d0 = w as i8;
                    let rest = (w - d0 as i32) >> 8;
                    let d1 = rest as i8;
                    let d2 = (rest - d1 as i32) >> 8;
                    let Ok(d2) = i8::try_from(d2) else {
                        self.digits.clear();
                        self.starts.clear();
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
        self.quads = quads;
    }
}

/// The AVX-512 VNNI horizontal pass (256-bit registers; weights prepared by `VnniLayout::prepare`).
#[target_feature(enable = "avx2,avx512vl,avx512vnni")]
#[clippy::msrv = "1.89"] // compiled only on Rust >= 1.89 (build.rs)
pub(super) unsafe fn horizontal_pass_vnni(
    src: Plane<'_>,
    out_w: usize,
    dst: &mut [u8],
    scratch: &mut HorizontalScratch,
) {
    match scratch.vnni.quads {
        1 => horizontal_rows_vnni::<1>(src, out_w, dst, scratch),
        2 => horizontal_rows_vnni::<2>(src, out_w, dst, scratch),
        3 => horizontal_rows_vnni::<3>(src, out_w, dst, scratch),
        4 => horizontal_rows_vnni::<4>(src, out_w, dst, scratch),
        _ => horizontal_rows_vnni::<{ usize::MAX }>(src, out_w, dst, scratch),
    }
}

#[target_feature(enable = "avx2,avx512vl,avx512vnni")]
#[clippy::msrv = "1.89"] // compiled only on Rust >= 1.89 (build.rs)
unsafe fn horizontal_rows_vnni<const Q: usize>(
    src: Plane<'_>,
    out_w: usize,
    dst: &mut [u8],
    scratch: &mut HorizontalScratch,
) {
    let quads = if Q == usize::MAX { scratch.vnni.quads } else { Q };
    let max_start = scratch.vnni.starts.iter().copied().max().unwrap_or(0);
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
    let quads = if Q == usize::MAX { scratch.vnni.quads } else { Q };
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
    let digits = scratch.vnni.digits.as_ptr() as *const __m128i;
    for o in 0..out_w {
        let start = *scratch.vnni.starts.get_unchecked(o) * 3;
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
