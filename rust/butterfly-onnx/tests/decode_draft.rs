//! JPEG draft mode (`DecodeLimits::jpeg_draft`) against Pillow: for every JPEG of the reference
//! corpus that Pillow decodes (4:4:4, 4:2:2, 4:2:0, progressive, greyscale, CMYK, restart
//! markers, odd and extreme sizes, 1920x1280, 6000x4000) and several resize sizes (draft scales
//! 1, 2, 4 and 8), the decoded pixels equal Pillow's `im.draft("RGB", request)` +
//! `convert("RGB")` byte for byte, `request` being torchvision's Resize output size (computed
//! in Python by torchvision itself). And Pillow's scale rule, worked out by hand.

mod common;

use std::process::Command;

use butterfly_onnx::decode::{decode_rgb, DecodeLimits, JpegDraft};

/// (resize_size, max_size): 600x520 photos draft at 1/8, 1/4, 1/2 and 1 with the first four.
const DRAFTS: [(u32, Option<u32>); 5] = [(64, None), (128, None), (256, None), (512, None), (100, Some(120))];

/// Pillow's drafted pixels for `files` at each of DRAFTS: `<out>/<i>_<file>.rgb` + a size line.
const PILLOW_DRAFT: &str = r#"
import json, sys
from pathlib import Path
from PIL import Image
from torchvision.transforms.functional import _compute_resized_output_size
corpus, out, drafts, files = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
sizes = {}
for i, (size, max_size) in enumerate(drafts):
    for name in files:
        with Image.open(corpus / name) as im:
            h, w = _compute_resized_output_size((im.height, im.width), [size], max_size)
            if h >= 1 and w >= 1:
                im.draft("RGB", (w, h))
            rgb = im.convert("RGB")
        (out / f"{i}_{name}.rgb").write_bytes(rgb.tobytes())
        sizes[f"{i}_{name}"] = rgb.size
(out / "sizes.json").write_text(json.dumps(sizes))
"#;

#[test]
fn drafted_pixels_match_pillows_draft() {
    let corpus = common::corpus();
    let files: Vec<String> = corpus
        .list("images")
        .iter()
        .filter(|e| e.get("error").is_none())
        .map(|e| e["file"].as_str().unwrap().to_string())
        .filter(|f| f.ends_with(".jpg"))
        .collect();
    assert!(files.len() >= 15, "the corpus lists {} good JPEGs", files.len());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pillow-draft-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let drafts: Vec<serde_json::Value> = DRAFTS.iter().map(|(s, m)| serde_json::json!([s, m])).collect();
    let py = common::python();
    let done = Command::new(&py)
        .args(["-c", PILLOW_DRAFT])
        .arg(&corpus.dir)
        .arg(&out)
        .arg(serde_json::to_string(&drafts).unwrap())
        .arg(serde_json::to_string(&files).unwrap())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(done.status.success(), "Pillow's draft references failed:\n{}", String::from_utf8_lossy(&done.stderr));
    let sizes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sizes.json")).unwrap()).unwrap();

    let mut failures = Vec::new();
    let mut scales = std::collections::BTreeSet::new();
    for (i, &(resize_size, max_size)) in DRAFTS.iter().enumerate() {
        let limits = DecodeLimits { max_pixels: None, jpeg_draft: Some(JpegDraft { resize_size, max_size }) };
        for name in &files {
            let key = format!("{i}_{name}");
            let bytes = corpus.read(name);
            let full = decode_rgb(&bytes, name, &DecodeLimits::default()).unwrap();
            let img = decode_rgb(&bytes, name, &limits).unwrap_or_else(|e| panic!("{key}: {e}"));
            let (w, h) = (sizes[&key][0].as_u64().unwrap() as u32, sizes[&key][1].as_u64().unwrap() as u32);
            scales.insert(full.width.div_ceil(img.width));
            if (img.width, img.height) != (w, h) {
                failures.push(format!("{key}: {}x{} != Pillow's drafted {w}x{h}", img.width, img.height));
                continue;
            }
            let want = std::fs::read(out.join(format!("{key}.rgb"))).unwrap();
            let (count, first, max) = common::byte_diff(&img.data, &want);
            if count > 0 {
                failures.push(format!("{key}: {count} bytes differ from Pillow's draft (first {first:?}, max {max})"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    assert!([1, 2, 4, 8].iter().all(|s| scales.contains(s)), "scales seen: {scales:?}");
}

#[test]
fn scale_is_pillows_rule() {
    let draft = |resize_size, max_size| JpegDraft { resize_size, max_size };
    // min(W // request_w, H // request_h), then the largest of 8, 4, 2, 1 not above it.
    assert_eq!(draft(256, None).scale(1920, 1280), 4); // request 384x256: min(5, 5) -> 4
    assert_eq!(draft(256, None).scale(1280, 1920), 4);
    assert_eq!(draft(256, None).scale(2200, 2100), 8); // request 268x256: min(8, 8)
    assert_eq!(draft(256, None).scale(640, 520), 2); // min(2, 2)
    assert_eq!(draft(256, None).scale(767, 511), 1); // 511 // 256 = 1
    assert_eq!(draft(256, None).scale(300, 200), 1); // an upscale: 0 -> 1
    assert_eq!(draft(256, None).scale(6000, 4000), 8); // min(15, 15) -> 8
                                                       // max_size: the request is torchvision's target (300x150), not 256x256.
    assert_eq!(draft(256, Some(300)).scale(2400, 1200), 8);
    assert_eq!(draft(256, None).scale(2400, 1200), 4);
    // A degenerate target (shorter side 0 under max_size) drafts nothing.
    assert_eq!(draft(256, Some(257)).scale(100_000, 10), 1);
}
