//! Decode + preprocess time per image, single thread, release build:
//!
//!     cargo bench -p butterfly-onnx --bench preprocess -- IMAGE...
//!
//! For each image (256/224 bilinear, ImageNet mean/std, Pillow 13's pass order): the time of
//! `decode_rgb` alone, of `preprocess_into` alone, of both, and of each resampling pass on the
//! rectangle the center crop needs, with its cost per multiply-add (`rows x outputs x taps x 3`
//! channels, Pillow's kernel size for both passes; the goal is the same cost per multiply-add
//! for both). Each figure is the fastest single call over about a second.

use std::time::{Duration, Instant};

use butterfly_onnx::decode::{decode_rgb, DecodeLimits};
use butterfly_onnx::preprocess::resize::{horizontal_pass, vertical_pass, AxisCoefficients, HorizontalScratch, Plane};
use butterfly_onnx::preprocess::{
    center_crop_axis, preprocess_into, resized_size, Interpolation, PreprocessSpec, ResampleOrder,
};

fn time_per_call(mut f: impl FnMut()) -> Duration {
    // The fastest single call over about a second: on a machine shared with other jobs, the
    // calls that ran without being preempted.
    f();
    let mut best = Duration::MAX;
    let start = Instant::now();
    let mut n = 0u32;
    while n < 10 || start.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        n += 1;
    }
    best
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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
            ms(decode),
            ms(resize),
            ms(total)
        );

        // Each pass alone, horizontal first, on the rectangle the crop needs.
        let (in_w, in_h) = (img.width as usize, img.height as usize);
        let (out_w, out_h) = resized_size(img.width, img.height, spec.resize_size, None).unwrap();
        let c = spec.crop_size as usize;
        let (xc, yc) = (center_crop_axis(out_w as usize, c), center_crop_axis(out_h as usize, c));
        let mut hx =
            AxisCoefficients::new(in_w, out_w as usize, xc.src_start..xc.src_start + xc.count, spec.interpolation);
        let mut vy =
            AxisCoefficients::new(in_h, out_h as usize, yc.src_start..yc.src_start + yc.count, spec.interpolation);
        let (cols, rows) = (hx.input_range(), vy.input_range());
        hx.rebase(cols.start);
        vy.rebase(rows.start);
        let stride = in_w * 3;
        let window = Plane {
            data: &img.data[rows.start * stride..],
            stride,
            x0: cols.start,
            width: cols.len(),
            rows: rows.len(),
        };
        let mut mid = vec![0u8; rows.len() * xc.count * 3];
        let mut scratch = HorizontalScratch::default();
        let h = time_per_call(|| horizontal_pass(window, &hx, &mut mid, &mut scratch));
        let mid_plane = Plane { data: &mid, stride: xc.count * 3, x0: 0, width: xc.count, rows: rows.len() };
        let mut dst = vec![0u8; yc.count * xc.count * 3];
        let mut acc = Vec::new();
        let v = time_per_call(|| vertical_pass(mid_plane, &vy, &mut dst, &mut acc));
        let h_macs = (rows.len() * xc.count * hx.taps * 3) as f64;
        let v_macs = (yc.count * xc.count * vy.taps * 3) as f64;
        // Crop + normalize alone: the image preprocessed at its own size (no resampling).
        let same = PreprocessSpec {
            resize_size: img.width.min(img.height),
            crop_size: img.width.min(img.height),
            ..spec.clone()
        };
        let mut same_out = vec![0f32; same.output_len()];
        let normalize = time_per_call(|| preprocess_into(img.view(), &same, &mut same_out).unwrap());
        let per_pixel = normalize.as_secs_f64() * 1e9 / (same.crop_size as f64).powi(2);
        println!(
            "    crop+normalize alone {:.3} ms for {}x{} ({per_pixel:.2} ns per pixel)",
            ms(normalize),
            same.crop_size,
            same.crop_size
        );
        println!(
            "    horizontal pass {:.3} ms ({} taps, {:.3} ns per multiply-add), vertical pass {:.3} ms ({} taps, {:.3} ns per multiply-add)",
            ms(h),
            hx.taps,
            h.as_secs_f64() * 1e9 / h_macs,
            ms(v),
            vy.taps,
            v.as_secs_f64() * 1e9 / v_macs
        );
    }
}
