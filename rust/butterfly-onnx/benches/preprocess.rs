//! Decode + preprocess time per image, single thread, release build:
//!
//!     cargo bench -p butterfly-onnx --bench preprocess -- IMAGE...
//!
//! For each image: the mean of `decode_rgb` alone and of `decode_rgb` + `preprocess_into`
//! (256/224 bilinear, ImageNet mean/std) over enough repetitions to run about a second.

use std::time::{Duration, Instant};

use butterfly_onnx::decode::{decode_rgb, DecodeLimits};
use butterfly_onnx::preprocess::{preprocess_into, Interpolation, PreprocessSpec, ResampleOrder};

fn time_per_call(mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut n = 0u32;
    while n < 5 || start.elapsed() < Duration::from_secs(1) {
        f();
        n += 1;
    }
    start.elapsed() / n
}

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if paths.is_empty() {
        eprintln!("usage: cargo bench --bench preprocess -- IMAGE...");
        return;
    }
    let spec = PreprocessSpec {
        resize_size: 256,
        crop_size: 224,
        interpolation: Interpolation::Bilinear,
        max_size: None,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
        resample_order: ResampleOrder::Pillow13,
    };
    let limits = DecodeLimits::default();
    let mut out = vec![0f32; spec.output_len()];
    for path in paths {
        let bytes = std::fs::read(&path).expect("readable image");
        let img = decode_rgb(&bytes, &path, &limits).expect("decodable image");
        let decode = time_per_call(|| {
            decode_rgb(&bytes, &path, &limits).unwrap();
        });
        let resize = time_per_call(|| preprocess_into(img.view(), &spec, &mut out).unwrap());
        let total = time_per_call(|| {
            let img = decode_rgb(&bytes, &path, &limits).unwrap();
            preprocess_into(img.view(), &spec, &mut out).unwrap();
        });
        println!(
            "{path} ({}x{}): decode {:.3} ms, resize+crop+normalize {:.3} ms, total {:.3} ms",
            img.width,
            img.height,
            decode.as_secs_f64() * 1e3,
            resize.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
    }
}
