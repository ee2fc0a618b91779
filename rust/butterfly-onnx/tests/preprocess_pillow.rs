//! preprocess.rs against torchvision and Pillow, bit for bit (max abs diff 0.0):
//! * the tensors of `Resize + CenterCrop + ToTensor + Normalize` for every decodable corpus
//!   image under several specs (256/224, 232/224, 160/128 bicubic, 224/224, max_size);
//! * `Image.resize` for random and chosen sizes with both filters and all three pass orders
//!   (the installed Pillow for its own order, single-axis chains for the others).

mod common;

use butterfly_onnx::decode::{decode_rgb, DecodeLimits};
use butterfly_onnx::preprocess::{
    preprocess, resample_region, ImageView, Interpolation, PreprocessSpec, ResampleOrder,
};

fn spec_from(json: &serde_json::Value, order: ResampleOrder) -> PreprocessSpec {
    let triple = |key: &str| {
        let v: Vec<f32> = json[key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        [v[0], v[1], v[2]]
    };
    PreprocessSpec {
        resize_size: json["resize_size"].as_u64().unwrap() as u32,
        crop_size: json["crop_size"].as_u64().unwrap() as u32,
        interpolation: json["interpolation"].as_str().unwrap().parse().unwrap(),
        max_size: json["max_size"].as_u64().map(|m| m as u32),
        mean: triple("mean"),
        std: triple("std"),
        resample_order: order,
    }
}

#[test]
fn tensors_match_torchvision_bit_for_bit() {
    let corpus = common::corpus();
    let order = corpus.pillow_order();
    let mut failures = Vec::new();
    let mut decoded = std::collections::HashMap::new();
    let tensors = corpus.list("tensors");
    for entry in tensors {
        let name = entry["image"].as_str().unwrap();
        let img = decoded
            .entry(name.to_string())
            .or_insert_with(|| decode_rgb(&corpus.read(name), name, &DecodeLimits::default()).unwrap());
        let spec = spec_from(&entry["spec"], order);
        let got = preprocess(img.view(), &spec).unwrap();
        let expected: Vec<f32> = corpus
            .read(entry["file"].as_str().unwrap())
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got.len(), expected.len(), "{name}");
        let differing = got.iter().zip(&expected).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        if differing > 0 {
            let max = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            failures.push(format!("{name} {:?}: {differing} values differ, max abs diff {max}", entry["spec"]));
        }
    }
    assert!(failures.is_empty(), "{} of {} tensors differ:\n{}", failures.len(), tensors.len(), failures.join("\n"));
    assert!(tensors.len() >= 100, "only {} tensors", tensors.len());
}

#[test]
fn resizes_match_pillow_for_every_pass_order() {
    let corpus = common::corpus();
    let mut failures = Vec::new();
    for entry in corpus.list("resizes") {
        let dims = |key: &str| {
            let a = entry[key].as_array().unwrap();
            (a[0].as_u64().unwrap() as u32, a[1].as_u64().unwrap() as u32)
        };
        let ((in_w, in_h), (out_w, out_h)) = (dims("in"), dims("out"));
        let src = corpus.read(entry["src"].as_str().unwrap());
        let filter: Interpolation = entry["filter"].as_str().unwrap().parse().unwrap();
        let order: ResampleOrder = entry["order"].as_str().unwrap().parse().unwrap();
        let view = ImageView { width: in_w, height: in_h, data: &src };
        let region = resample_region(view, out_w, out_h, 0..out_w as usize, 0..out_h as usize, filter, order).unwrap();
        let mut got = Vec::new();
        for r in 0..region.rows {
            let start = r * region.stride + region.x0 * 3;
            got.extend_from_slice(&region.data[start..start + region.width * 3]);
        }
        let expected = corpus.read(entry["file"].as_str().unwrap());
        let (count, first, max) = common::byte_diff(&got, &expected);
        if count > 0 || got.len() != expected.len() {
            failures.push(format!(
                "{in_w}x{in_h} -> {out_w}x{out_h} {filter} {order}: {count} bytes differ (first {first:?}, max {max})"
            ));
        }
    }
    assert!(failures.is_empty(), "{} resizes differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn cropped_region_equals_the_full_resize() {
    // Computing only the rows/columns that survive the crop gives the same values as
    // resizing everything and cropping afterwards.
    let corpus = common::corpus();
    let img = decode_rgb(&corpus.read("jpeg_301x903.jpg"), "x", &DecodeLimits::default()).unwrap();
    for order in [ResampleOrder::Pillow12_1, ResampleOrder::Pillow13] {
        for filter in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let (w, h) = (256u32, 768u32);
            let full = resample_region(img.view(), w, h, 0..w as usize, 0..h as usize, filter, order).unwrap();
            let part = resample_region(img.view(), w, h, 16..240, 272..496, filter, order).unwrap();
            for r in 0..224 {
                let a = &full.data[(272 + r) * full.stride + (full.x0 + 16) * 3..][..224 * 3];
                let b = &part.data[r * part.stride + part.x0 * 3..][..224 * 3];
                assert_eq!(a, b, "{filter} {order} row {r}");
            }
        }
    }
}
