//! `Classifier` against torchvision + onnxruntime (Python) on real photos: the batch it
//! builds, the logits, the top-k; plus batching, threads, overrides and bad input.

mod support;

use std::path::PathBuf;

use butterfly_onnx::classifier::{Classifier, ClassifierOptions, ImageInput};
use butterfly_onnx::contract::OutputKind;
use butterfly_onnx::decode::{read_rgb, DecodeLimits};
use butterfly_onnx::Error;
use support::{fixture, Fixture};

fn open(fx: &Fixture, model: &str, options: ClassifierOptions) -> Result<Classifier, Error> {
    Classifier::open(fx.path(model), ClassifierOptions { ort_library: Some(fx.ort_library.clone()), ..options })
}

fn paths(files: &[PathBuf]) -> Vec<ImageInput> {
    files.iter().cloned().map(ImageInput::Path).collect()
}

fn max_abs_diff(a: impl IntoIterator<Item = f32>, b: impl IntoIterator<Item = f32>) -> f32 {
    a.into_iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn batch_logits_and_top_k_match_torchvision_and_onnxruntime() {
    let Some(fx) = fixture() else { return };
    let classifier = open(fx, "model.onnx", ClassifierOptions::default()).unwrap();
    let images = fx.images();
    assert!(images.len() >= 2);

    let (batch, errors) = classifier.preprocess(&paths(&images));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(batch.shape(), [images.len(), 3, 64, 64]);
    // Bit for bit: the same float32 values torchvision produces.
    assert_eq!(batch.as_slice().unwrap(), fx.reference_batch.as_slice());

    let (logits, _) = classifier.logits(&paths(&images)).unwrap();
    let reference = fx.reference_logits();
    for (row, expected) in logits.outer_iter().zip(&reference) {
        assert!(max_abs_diff(row.iter().copied(), expected.iter().copied()) <= 1e-5, "{row} vs {expected:?}");
    }

    let (predictions, _) = classifier.predict(&paths(&images), 3).unwrap();
    for ((index, top), expected) in predictions.iter().zip(fx.reference["images"].as_array().unwrap()) {
        let expected = expected["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        for (got, want) in top.iter().zip(expected) {
            assert_eq!(got.label, want["label"].as_str().unwrap(), "image {index}");
            assert_eq!(got.index as u64, want["index"].as_u64().unwrap());
            assert!((got.probability as f64 - want["probability"].as_f64().unwrap()).abs() < 1e-5);
        }
    }
}

#[test]
fn bytes_and_decoded_pixels_give_the_same_rows_as_paths() {
    let Some(fx) = fixture() else { return };
    let classifier = open(fx, "model.onnx", ClassifierOptions::default()).unwrap();
    let images = fx.images();
    let inputs: Vec<ImageInput> = images
        .iter()
        .enumerate()
        .map(|(i, path)| match i % 3 {
            0 => ImageInput::Path(path.clone()),
            1 => ImageInput::Bytes { source: format!("bytes {i}"), bytes: std::fs::read(path).unwrap() },
            _ => ImageInput::Rgb { source: format!("rgb {i}"), image: read_rgb(path, &DecodeLimits::default()).unwrap() },
        })
        .collect();
    let (batch, errors) = classifier.preprocess(&inputs);
    assert!(errors.is_empty());
    assert_eq!(batch.as_slice().unwrap(), fx.reference_batch.as_slice());
}

#[test]
fn bad_images_are_reported_by_index_and_the_others_still_come_back() {
    let Some(fx) = fixture() else { return };
    let classifier = open(fx, "model.onnx", ClassifierOptions::default()).unwrap();
    let images = fx.images();
    let inputs = vec![
        ImageInput::path(fx.path("bad/empty.jpg")),
        ImageInput::Path(images[0].clone()),
        ImageInput::path(fx.path("no/such/image.png")),
        ImageInput::path(fx.path("bad/text.jpg")),
        ImageInput::Path(images[1].clone()),
        ImageInput::path(fx.path("bad/truncated.jpg")),
        ImageInput::Rgb { source: "short pixels".into(), image: butterfly_onnx::decode::RgbImage { width: 4, height: 4, data: vec![0; 5] } },
    ];
    let (batch, errors) = classifier.preprocess(&inputs);
    let kinds: Vec<(usize, &str)> = errors.iter().map(|(i, e)| (*i, e.kind())).collect();
    assert_eq!(
        kinds,
        [(0, "ImageDecodeError"), (2, "ImageNotFoundError"), (3, "ImageDecodeError"), (5, "ImageDecodeError"), (6, "ImageDecodeError")]
    );
    for (index, error) in &errors {
        assert_eq!(error.source_name().unwrap(), inputs[*index].source(), "errors name their input");
        assert!(error.to_string().contains(&inputs[*index].source()));
    }
    // Rows of the two good images, in input order.
    let row = 3 * 64 * 64;
    assert_eq!(batch.shape()[0], 2);
    assert_eq!(batch.as_slice().unwrap(), &fx.reference_batch[..2 * row]);
    let (logits, errors_again) = classifier.logits(&inputs).unwrap();
    assert_eq!((logits.shape()[0], errors_again.len()), (2, 5));
}

#[test]
fn pixel_limit_is_checked_before_decoding() {
    let Some(fx) = fixture() else { return };
    let classifier =
        open(fx, "model.onnx", ClassifierOptions { max_image_pixels: Some(100), ..Default::default() }).unwrap();
    let (_, errors) = classifier.preprocess(&paths(&fx.images()[..1]));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].1.kind(), "ImageTooLargeError");
}

#[test]
fn a_static_batch_model_is_fed_in_padded_chunks_with_identical_results() {
    let Some(fx) = fixture() else { return };
    let dynamic = open(fx, "model.onnx", ClassifierOptions::default()).unwrap();
    let fixed = open(fx, "model_static2.onnx", ClassifierOptions::default()).unwrap();
    assert_eq!((dynamic.static_batch(), fixed.static_batch()), (None, Some(2)));
    let mut images = fx.images();
    images.truncate(5); // odd: the last chunk is padded
    let (a, _) = dynamic.logits(&paths(&images)).unwrap();
    let (b, _) = fixed.logits(&paths(&images)).unwrap();
    assert_eq!(a.shape(), [images.len(), 7]);
    assert!(max_abs_diff(a.iter().copied(), b.iter().copied()) <= 1e-6);
    // An empty batch is an empty result, not an ORT error.
    let (empty, _) = fixed.logits(&[]).unwrap();
    assert_eq!(empty.shape(), [0, 7]);
}

#[test]
fn thread_counts_and_concurrent_callers_agree() {
    let Some(fx) = fixture() else { return };
    let images = fx.images();
    let one = open(fx, "model.onnx", ClassifierOptions { threads: Some(1), ..Default::default() }).unwrap();
    let two = open(fx, "model.onnx", ClassifierOptions { threads: Some(2), ..Default::default() }).unwrap();
    assert_eq!(one.threads(), 1);
    let (a, _) = one.logits(&paths(&images)).unwrap();
    let (b, _) = two.logits(&paths(&images)).unwrap();
    assert!(max_abs_diff(a.iter().copied(), b.iter().copied()) <= 1e-6);
    // One classifier shared by several threads.
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| two.logits(&paths(&images)).unwrap().0)).collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap(), b);
        }
    });
    let error = open(fx, "model.onnx", ClassifierOptions { threads: Some(0), ..Default::default() }).unwrap_err();
    assert!(matches!(error, Error::InvalidArgument { .. }), "{error}");
}

#[test]
fn run_checks_the_batch_shape() {
    let Some(fx) = fixture() else { return };
    let classifier = open(fx, "model.onnx", ClassifierOptions::default()).unwrap();
    let wrong = ndarray::Array4::<f32>::zeros((1, 3, 32, 32));
    let error = classifier.run(wrong.view()).unwrap_err();
    assert!(error.to_string().contains("(N, 3, 64, 64)"), "{error}");
}

#[test]
fn model_errors_have_their_own_kinds() {
    let Some(fx) = fixture() else { return };
    let kind = |model: &str, options: ClassifierOptions| open(fx, model, options).unwrap_err();
    let missing = kind("missing.onnx", ClassifierOptions::default());
    assert_eq!(missing.kind(), "ModelNotFoundError");
    let not_onnx = kind("not_a_model.onnx", ClassifierOptions::default());
    assert_eq!(not_onnx.kind(), "InvalidModelError");
    assert!(not_onnx.to_string().contains("not_a_model.onnx"), "{not_onnx}");
    let no_contract = kind("model_no_contract.onnx", ClassifierOptions::default());
    assert_eq!(no_contract.kind(), "ContractError");
    assert!(no_contract.to_string().contains("no butterfly_onnx contract"), "{no_contract}");
    // Labels alone are not enough without a contract.
    let labels: Vec<String> = (0..7).map(|i| format!("class {i}")).collect();
    let partial = kind("model_no_contract.onnx", ClassifierOptions { labels: Some(labels.clone()), ..Default::default() });
    assert_eq!(partial.kind(), "ContractError");
    // A label count that does not fit the model's output.
    let wrong_count = kind("model.onnx", ClassifierOptions { labels: Some(labels[..3].to_vec()), ..Default::default() });
    assert_eq!(wrong_count.kind(), "ContractError");
    assert!(wrong_count.to_string().contains("3 labels"), "{wrong_count}");
    let duplicate = kind("model.onnx", ClassifierOptions { labels: Some(vec!["a".into(); 7]), ..Default::default() });
    assert_eq!(duplicate.kind(), "ContractError");
}

#[test]
fn explicit_labels_and_preprocess_run_a_model_without_contract() {
    let Some(fx) = fixture() else { return };
    let with_contract = open(fx, "model.onnx", ClassifierOptions::default()).unwrap();
    let labels: Vec<String> = (0..7).map(|i| format!("class {i}")).collect();
    let spec = with_contract.contract().preprocess.clone();
    let foreign = open(
        fx,
        "model_no_contract.onnx",
        ClassifierOptions { labels: Some(labels.clone()), preprocess: Some(spec.clone()), ..Default::default() },
    )
    .unwrap();
    assert_eq!(foreign.labels(), labels.as_slice());
    assert_eq!((foreign.contract().input_name.as_str(), foreign.contract().output_name.as_str()), ("input", "logits"));
    assert_eq!(foreign.contract().output_kind, OutputKind::Logits);
    assert_eq!(foreign.model_contract_json(), None);
    let images = fx.images();
    assert_eq!(foreign.logits(&paths(&images)).unwrap().0, with_contract.logits(&paths(&images)).unwrap().0);

    // A preprocess override whose crop does not fit a fixed input size is a contract error.
    let mut bigger = spec;
    bigger.crop_size = 96;
    bigger.resize_size = 100;
    let error = open(fx, "model_static2.onnx", ClassifierOptions { preprocess: Some(bigger), ..Default::default() })
        .unwrap_err();
    assert_eq!(error.kind(), "ContractError");
    assert!(error.to_string().contains("96"), "{error}");
}
