//! Unit checks of the preprocessing formulas against values worked out by hand from Pillow's
//! `Resample.c` and torchvision's `functional.py` (docs/preprocessing.md); the Pillow and
//! torchvision differential tests are in preprocess_pillow.rs.

use butterfly_onnx::preprocess::resize::{fixed_point, pillow_window, AxisCoefficients, PRECISION_BITS};
use butterfly_onnx::preprocess::{
    center_crop_axis, normalize_level, preprocess, resample_region, resized_size, AxisCrop, ImageView, Interpolation,
    NormalizeTable, PreprocessSpec, ResampleOrder,
};
use butterfly_onnx::Error;

fn taps(in_len: usize, out_len: usize, o: usize, filter: Interpolation) -> (usize, Vec<i32>) {
    let (start, weights) = pillow_window(in_len, out_len, o, filter);
    (start, weights.iter().map(|&w| fixed_point(w)).collect())
}

#[test]
fn bilinear_4_to_3_coefficients() {
    // scale = filterscale = support = 4/3. Output 0: center 2/3, window [0, 2):
    // raw weights 1 - |(0 - 2/3 + 0.5) * 3/4| = 0.875 and 0.375, normalized 0.7 / 0.3;
    // 0.7 * 2^22 = 2936012.8 -> 2936013, 0.3 * 2^22 = 1258291.2 -> 1258291.
    assert_eq!(taps(4, 3, 0, Interpolation::Bilinear), (0, vec![2936013, 1258291]));
    // Output 1: center 2, window [1, 3): 0.625 / 0.625 -> 0.5 / 0.5.
    assert_eq!(taps(4, 3, 1, Interpolation::Bilinear), (1, vec![2097152, 2097152]));
    // Output 2 mirrors output 0.
    assert_eq!(taps(4, 3, 2, Interpolation::Bilinear), (2, vec![1258291, 2936013]));
}

#[test]
fn bilinear_500_to_224_coefficients() {
    // scale = support = 500/224 = 2.2321...; output 0: center 1.1161, window [0, 3):
    // raw 0.72400, 0.82800, 0.38000 (sum 1.932) -> 0.37474, 0.42857, 0.19669.
    assert_eq!(taps(500, 224, 0, Interpolation::Bilinear), (0, vec![1571779, 1797559, 824967]));
    // Output 100: center 224.330, window [222, 227) with five taps.
    assert_eq!(taps(500, 224, 100, Interpolation::Bilinear), (222, vec![337645, 1178007, 1733245, 892884, 52523]));
    // The last output mirrors the first.
    assert_eq!(taps(500, 224, 223, Interpolation::Bilinear), (497, vec![824967, 1797559, 1571779]));
    for o in 0..224 {
        let (_, k) = taps(500, 224, o, Interpolation::Bilinear);
        let sum: i32 = k.iter().sum();
        assert!((sum - (1 << PRECISION_BITS)).abs() <= 3, "output {o}: taps sum to {sum}");
    }
}

#[test]
fn bicubic_negative_taps_round_away_from_zero() {
    // 2 -> 4, output 0: center 0.25, window [0, 2) (clipped at the left edge):
    // cubic(0.25) = 0.8671875, cubic(1.25) = -0.0703125 (a = -0.5), sum 0.796875,
    // normalized 1.0882353 and -0.0882353; the negative tap is trunc(-0.5 + w * 2^22).
    assert_eq!(taps(2, 4, 0, Interpolation::Bicubic), (0, vec![4564390, -370086]));
    // 10 -> 3 (downscale, support 2 * 10/3): ten taps, the outer ones negative.
    assert_eq!(
        taps(10, 3, 1, Interpolation::Bicubic),
        (0, vec![-90714, -27682, 277969, 773482, 1164096, 1164096, 773482, 277969, -27682, -90714])
    );
    // The negative lobe makes output 0 of [0, 255] negative before clipping: clip8 gives 0.
    let row = [0u8, 0, 0, 255, 255, 255];
    let region = resample_region(
        ImageView { width: 2, height: 1, data: &row },
        4,
        1,
        0..4,
        0..1,
        Interpolation::Bicubic,
        ResampleOrder::Pillow13,
    )
    .unwrap();
    // (2^21 + 255 * -370086) >> 22 is negative -> 0; output 3 mirrors it: above 255 -> 255.
    assert_eq!(&region.data[..3], &[0, 0, 0]);
    assert_eq!(&region.data[9..12], &[255, 255, 255]);
}

#[test]
fn padded_windows_keep_their_values() {
    // Fixed-length windows are shifted inside the input and padded with zero taps.
    let c = AxisCoefficients::new(7, 3, 0..3, Interpolation::Bicubic);
    for o in 0..3 {
        let (start, k) = taps(7, 3, o, Interpolation::Bicubic);
        let stored = &c.weights[o * c.taps..(o + 1) * c.taps];
        let shift = start - c.starts[o];
        assert_eq!(&stored[shift..shift + k.len()], k.as_slice());
        assert!(stored.iter().enumerate().all(|(i, &w)| (shift..shift + k.len()).contains(&i) || w == 0));
        assert!(c.starts[o] + c.taps <= 7);
    }
}

#[test]
fn center_crop_rounds_half_to_even_and_pads() {
    // (309 - 224) / 2 = 42.5 -> 42 (Python's round), (311 - 224) / 2 = 43.5 -> 44.
    assert_eq!(center_crop_axis(309, 224), AxisCrop { src_start: 42, dst_start: 0, count: 224 });
    assert_eq!(center_crop_axis(311, 224), AxisCrop { src_start: 44, dst_start: 0, count: 224 });
    assert_eq!(center_crop_axis(256, 224), AxisCrop { src_start: 16, dst_start: 0, count: 224 });
    assert_eq!(center_crop_axis(224, 224), AxisCrop { src_start: 0, dst_start: 0, count: 224 });
    // Smaller than the crop: (224 - 101) // 2 = 61 zeros before, 62 after.
    assert_eq!(center_crop_axis(101, 224), AxisCrop { src_start: 0, dst_start: 61, count: 101 });
    assert_eq!(center_crop_axis(1, 4), AxisCrop { src_start: 0, dst_start: 1, count: 1 });
}

#[test]
fn resize_size_rule() {
    // Shorter side -> size, longer side int(size * long / short).
    assert_eq!(resized_size(500, 375, 256, None).unwrap(), (341, 256));
    assert_eq!(resized_size(375, 500, 256, None).unwrap(), (256, 341));
    assert_eq!(resized_size(1920, 1280, 256, None).unwrap(), (384, 256));
    assert_eq!(resized_size(256, 256, 256, None).unwrap(), (256, 256));
    assert_eq!(resized_size(3, 500, 256, None).unwrap(), (256, 42666));
    // 232 * 1000 / 999 = 232.232 -> 232: a one-pixel aspect change vanishes.
    assert_eq!(resized_size(1000, 999, 232, None).unwrap(), (232, 232));
    // max_size: 256 x 42666 exceeds 300 -> short = int(300 * 256 / 42666) = 1.
    assert_eq!(resized_size(3, 500, 256, Some(300)).unwrap(), (1, 300));
    assert_eq!(resized_size(1920, 1280, 256, Some(300)).unwrap(), (300, 200));
    assert_eq!(resized_size(1920, 1280, 256, Some(400)).unwrap(), (384, 256));
    // A resize to zero pixels (torchvision/Pillow raise) is an error here too.
    assert!(matches!(resized_size(1, 1000, 256, Some(300)), Err(Error::InvalidArgument { .. })));
}

#[test]
fn pass_order_rules() {
    use ResampleOrder::*;
    // 300x900 -> 256x768: height shrinks by 132 > 2 * 44: Pillow 13 goes vertical first.
    assert!(Pillow13.vertical_first(300, 900, 256, 768));
    assert!(!Pillow12_1.vertical_first(300, 900, 256, 768));
    assert!(!Pillow12_2.vertical_first(300, 900, 256, 768));
    // Landscape: horizontal first everywhere.
    assert!(!Pillow13.vertical_first(900, 300, 768, 256));
    // Pillow 12.2's exception: H > 100 W and the height shrinks.
    assert!(Pillow12_2.vertical_first(10, 1500, 5, 700));
    assert!(!Pillow12_2.vertical_first(10, 1000, 5, 700));
    for order in [Pillow12_1, Pillow12_2, Pillow13] {
        assert_eq!(order.as_str().parse::<ResampleOrder>().unwrap(), order);
    }
    assert!("pillow_14".parse::<ResampleOrder>().is_err());
    assert_eq!("bicubic".parse::<Interpolation>().unwrap(), Interpolation::Bicubic);
    assert!("nearest".parse::<Interpolation>().is_err());
}

#[test]
fn normalization_of_all_levels_is_the_f32_formula() {
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    let table = NormalizeTable::new(mean, std);
    let mut differs_from_reciprocal = 0;
    for c in 0..3 {
        for level in 0..=255u8 {
            let x = level as f32 / 255.0;
            let expected = (x - mean[c]) / std[c];
            assert_eq!(table.channels[c][level as usize].to_bits(), expected.to_bits());
            assert_eq!(normalize_level(level, mean[c], std[c]).to_bits(), expected.to_bits());
            // The shortcut the formula must not take changes many values.
            let shortcut = (level as f32 * (1.0 / 255.0) - mean[c]) * (1.0 / std[c]);
            differs_from_reciprocal += (shortcut.to_bits() != expected.to_bits()) as usize;
        }
    }
    assert!(differs_from_reciprocal > 100, "{differs_from_reciprocal}");
}

#[test]
fn unchanged_size_and_padding() {
    // A 2x2 image with resize 2 / crop 4: no resampling, one zero pixel of padding before and
    // after on each axis (filled with level 0 normalized).
    let data = [10u8, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120];
    let spec = PreprocessSpec {
        resize_size: 2,
        crop_size: 4,
        interpolation: Interpolation::Bilinear,
        max_size: None,
        mean: [0.5; 3],
        std: [0.25; 3],
        resample_order: ResampleOrder::Pillow13,
    };
    let out = preprocess(ImageView { width: 2, height: 2, data: &data }, &spec).unwrap();
    let norm = |p: u8| normalize_level(p, 0.5, 0.25);
    for c in 0..3 {
        let plane = &out[c * 16..(c + 1) * 16];
        for y in 0..4 {
            for x in 0..4 {
                let expected = if (1..3).contains(&y) && (1..3).contains(&x) {
                    norm(data[((y - 1) * 2 + (x - 1)) * 3 + c])
                } else {
                    norm(0)
                };
                assert_eq!(plane[y * 4 + x].to_bits(), expected.to_bits(), "c{c} y{y} x{x}");
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let spec = PreprocessSpec {
        resize_size: 8,
        crop_size: 4,
        interpolation: Interpolation::Bilinear,
        max_size: None,
        mean: [0.5; 3],
        std: [0.5; 3],
        resample_order: ResampleOrder::Pillow13,
    };
    let data = vec![0u8; 5 * 4 * 3];
    let mut out = vec![0f32; 3 * 4 * 4];
    let short = ImageView { width: 5, height: 5, data: &data };
    assert!(matches!(
        butterfly_onnx::preprocess::preprocess_into(short, &spec, &mut out),
        Err(Error::InvalidArgument { .. })
    ));
    let ok = ImageView { width: 5, height: 4, data: &data };
    let mut wrong_out = vec![0f32; 10];
    assert!(matches!(
        butterfly_onnx::preprocess::preprocess_into(ok, &spec, &mut wrong_out),
        Err(Error::InvalidArgument { .. })
    ));
    let zero_std = PreprocessSpec { std: [0.5, 0.0, 0.5], ..spec.clone() };
    assert!(matches!(
        butterfly_onnx::preprocess::preprocess_into(ok, &zero_std, &mut out),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(butterfly_onnx::preprocess::preprocess_into(ok, &spec, &mut out).is_ok());
}
