//! decode.rs against Pillow: `Image.open(f).convert("RGB")` pixels, bit for bit, over the
//! generated corpus (JPEG subsamplings, progressive, greyscale, CMYK, restart markers, odd and
//! extreme sizes; PNG RGB/RGBA/LA/L/palette/1-bit/2-bit/16-bit; GIF; BMP; TIFF; WebP), and
//! Pillow's verdict on broken files (truncated JPEG/PNG, text, empty) reproduced as errors.

mod common;

use butterfly_onnx::decode::{decode_rgb, read_rgb, DecodeLimits};
use butterfly_onnx::{Error, ErrorKind};

const NO_LIMIT: DecodeLimits = DecodeLimits { max_pixels: None, jpeg_draft: None };

#[test]
fn decoded_pixels_and_errors_match_pillow() {
    let corpus = common::corpus();
    let mut failures = Vec::new();
    let mut checked = 0;
    for entry in corpus.list("images") {
        let name = entry["file"].as_str().unwrap();
        let bytes = corpus.read(name);
        let result = decode_rgb(&bytes, name, &NO_LIMIT);
        match (entry.get("error"), result) {
            (Some(pillow), Ok(img)) => {
                failures.push(format!("{name}: Pillow raises ({pillow}) but Rust decoded {}x{}", img.width, img.height))
            }
            (Some(_), Err(Error::ImageDecode { source_name, .. })) => assert_eq!(source_name, name),
            (Some(_), Err(other)) => failures.push(format!("{name}: expected ImageDecode, got {other:?}")),
            (None, Err(e)) => failures.push(format!("{name}: Pillow decodes it, Rust fails: {e}")),
            (None, Ok(img)) => {
                let (w, h) = (entry["width"].as_u64().unwrap() as u32, entry["height"].as_u64().unwrap() as u32);
                if (img.width, img.height) != (w, h) {
                    failures.push(format!("{name}: size {}x{} != Pillow's {w}x{h}", img.width, img.height));
                    continue;
                }
                let expected = corpus.read(entry["rgb"].as_str().unwrap());
                let (count, first, max) = common::byte_diff(&img.data, &expected);
                if count > 0 {
                    failures.push(format!(
                        "{name} ({}): {count} of {} bytes differ from Pillow (first at {first:?}, max diff {max})",
                        entry["pillow_mode"],
                        expected.len()
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    assert!(checked >= 40, "only {checked} images checked");
}

#[test]
fn truncated_jpeg_is_an_error_naming_the_source() {
    let corpus = common::corpus();
    let err = decode_rgb(&corpus.read("trunc_half.jpg"), "half.jpg", &NO_LIMIT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImageDecode);
    let message = err.to_string();
    assert!(message.starts_with("half.jpg: ") && message.contains("truncated"), "{message}");
}

#[test]
fn broken_inputs_never_panic() {
    // Every prefix length class and scattered byte corruptions of a JPEG and a PNG: each
    // decode returns (Ok or a decode error) instead of panicking or aborting.
    let corpus = common::corpus();
    for name in ["photo_420.jpg", "photo_progressive.jpg", "rgb.png", "palette.gif", "rgb.bmp", "rgb.tif", "lossy.webp"]
    {
        let good = corpus.read(name);
        for cut in (0..good.len()).step_by((good.len() / 60).max(1)) {
            let _ = decode_rgb(&good[..cut], name, &NO_LIMIT);
        }
        let mut state = 0x9E3779B97F4A7C15u64;
        for _ in 0..40 {
            let mut bad = good.clone();
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % bad.len() as u64) as usize;
                bad[i] = (state >> 32) as u8;
            }
            if let Err(e) = decode_rgb(&bad, name, &NO_LIMIT) {
                assert!(matches!(e, Error::ImageDecode { .. } | Error::ImageTooLarge { .. }), "{name}: {e:?}");
            }
        }
    }
}

#[test]
fn pixel_limit_is_checked_from_the_header() {
    let corpus = common::corpus();
    for name in ["photo_1920x1280.jpg", "rgb.png", "palette.gif", "rgb.bmp"] {
        let bytes = corpus.read(name);
        let img = decode_rgb(&bytes, name, &NO_LIMIT).unwrap();
        let pixels = img.width as u64 * img.height as u64;
        let exact = DecodeLimits { max_pixels: Some(pixels), jpeg_draft: None };
        assert!(decode_rgb(&bytes, name, &exact).is_ok(), "{name}: at the limit is allowed");
        let below = DecodeLimits { max_pixels: Some(pixels - 1), jpeg_draft: None };
        match decode_rgb(&bytes, name, &below) {
            Err(Error::ImageTooLarge { source_name, pixels: p, limit, .. }) => {
                assert_eq!((source_name.as_str(), p, limit), (name, pixels, pixels - 1))
            }
            other => panic!("{name}: expected ImageTooLarge, got {other:?}"),
        }
    }
    // A header claiming 60000 x 60000 is refused before any pixel data is looked at.
    let mut huge = corpus.read("jpeg_2x3.jpg");
    let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
    huge[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let limit = DecodeLimits { max_pixels: Some(178_956_970), jpeg_draft: None };
    assert!(matches!(decode_rgb(&huge, "huge.jpg", &limit), Err(Error::ImageTooLarge { .. })));
}

#[test]
fn read_rgb_reports_missing_files_and_names_the_path() {
    let corpus = common::corpus();
    let missing = corpus.path("no_such_image.jpg");
    match read_rgb(&missing, &NO_LIMIT) {
        Err(Error::ImageNotFound { source_name }) => assert_eq!(source_name, missing.display().to_string()),
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    let path = corpus.path("photo_444.jpg");
    let from_path = read_rgb(&path, &NO_LIMIT).unwrap();
    let from_bytes = decode_rgb(&corpus.read("photo_444.jpg"), "x", &NO_LIMIT).unwrap();
    assert_eq!(from_path, from_bytes);
    match read_rgb(&corpus.path("empty.png"), &NO_LIMIT) {
        Err(Error::ImageDecode { source_name, reason }) => {
            assert!(source_name.ends_with("empty.png") && reason.contains("empty"), "{reason}")
        }
        other => panic!("expected ImageDecode, got {other:?}"),
    }
}

#[test]
fn concurrent_decodes_with_errors_stay_independent() {
    // libjpeg errors unwind out of C on whichever thread hit them; other threads' decodes and
    // results are unaffected (the rust backend decodes a batch on several threads).
    let corpus = common::corpus();
    let good = corpus.read("photo_420.jpg");
    let bad = corpus.read("trunc_half.jpg");
    let corrupt = corpus.read("corrupt_scan.jpg");
    let expected = decode_rgb(&good, "good", &NO_LIMIT).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (good, bad, corrupt, expected) = (&good, &bad, &corrupt, &expected);
            scope.spawn(move || {
                for i in 0..6 {
                    match (t + i) % 3 {
                        0 => assert_eq!(&decode_rgb(good, "good", &NO_LIMIT).unwrap(), expected),
                        1 => assert!(matches!(decode_rgb(bad, "bad", &NO_LIMIT), Err(Error::ImageDecode { .. }))),
                        _ => assert!(decode_rgb(corrupt, "corrupt", &NO_LIMIT).is_ok()),
                    }
                }
            });
        }
    });
}

/// The fuzzer's regression corpus (tests/fixtures/regressions/, read from the repository on
/// every run, Pillow's verdicts computed fresh by `make_pillow_refs.py --regressions`): the
/// same pixels where Pillow decodes (a refusal only where the index allows one), the same
/// error class where Pillow raises, with the backends' default pixel limit.
#[test]
fn fuzzer_regression_corpus_matches_pillow() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("regressions-{}", std::process::id()));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/make_pillow_refs.py");
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let python = std::env::var_os("BUTTERFLY_ONNX_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|| {
        if venv.exists() {
            venv
        } else {
            "python3".into()
        }
    });
    let run = std::process::Command::new(&python).arg(&script).arg("--regressions").arg(&out).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("regressions.json")).unwrap()).unwrap();
    assert!(entries.len() >= 30, "only {} regression files", entries.len());
    let limits = DecodeLimits { max_pixels: Some(178_956_970), jpeg_draft: None };
    let mut failures = Vec::new();
    for e in &entries {
        let name = e["name"].as_str().unwrap();
        if e["known_mismatch"].as_bool() == Some(true) {
            continue; // an open defect, listed in index.json and docs/reliability.md
        }
        let bytes = std::fs::read(e["file"].as_str().unwrap()).unwrap();
        let class = e.get("error_class").and_then(|c| c.as_str()).map(|c| match c {
            "ImageTooLargeError" => ErrorKind::ImageTooLarge,
            _ => ErrorKind::ImageDecode,
        });
        match (class, decode_rgb(&bytes, name, &limits)) {
            (Some(class), Ok(_)) => failures.push(format!("{name}: Pillow raises ({class:?}) but Rust decoded it")),
            (Some(class), Err(err)) if err.kind() != class => {
                failures.push(format!("{name}: Pillow's error is {class:?}, Rust's {:?}", err.kind()))
            }
            (Some(_), Err(_)) => {}
            (None, Err(err)) => {
                if !(e["rust_may_refuse"].as_bool() == Some(true) && err.kind() == ErrorKind::ImageDecode) {
                    failures.push(format!("{name}: Pillow decodes it, Rust refuses: {err}"));
                }
            }
            (None, Ok(img)) => {
                let expected = std::fs::read(e["rgb"].as_str().unwrap()).unwrap();
                let size = (e["width"].as_u64().unwrap() as u32, e["height"].as_u64().unwrap() as u32);
                if (img.width, img.height) != size || img.data != expected {
                    failures.push(format!("{name}: pixels differ from Pillow's"));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
