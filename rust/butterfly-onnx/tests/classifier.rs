//! `Classifier` against torchvision + onnxruntime (Python) on real photos: the batch it
//! builds, the logits, the top-k; plus batching, threads, overrides and bad input.

mod support;

use std::path::PathBuf;

use butterfly_onnx::classifier::{Classifier, ClassifierOptions, ImageInput};
use butterfly_onnx::contract::OutputKind;
use butterfly_onnx::decode::{read_rgb, DecodeLimits};
use butterfly_onnx::{Error, ErrorKind};
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

    let (batch, errors) = classifier.preprocess(&paths(&images)).unwrap();
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
            _ => {
                ImageInput::Rgb { source: format!("rgb {i}"), image: read_rgb(path, &DecodeLimits::default()).unwrap() }
            }
        })
        .collect();
    let (batch, errors) = classifier.preprocess(&inputs).unwrap();
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
        ImageInput::Rgb {
            source: "short pixels".into(),
            image: butterfly_onnx::decode::RgbImage { width: 4, height: 4, data: vec![0; 5] },
        },
    ];
    let (batch, errors) = classifier.preprocess(&inputs).unwrap();
    let kinds: Vec<(usize, ErrorKind)> = errors.iter().map(|(i, e)| (*i, e.kind())).collect();
    assert_eq!(
        kinds,
        [
            (0, ErrorKind::ImageDecode),
            (2, ErrorKind::ImageNotFound),
            (3, ErrorKind::ImageDecode),
            (5, ErrorKind::ImageDecode),
            (6, ErrorKind::ImageDecode)
        ]
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
    let (_, errors) = classifier.preprocess(&paths(&fx.images()[..1])).unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].1.kind(), ErrorKind::ImageTooLarge);
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
    assert_eq!(missing.kind(), ErrorKind::ModelNotFound);
    let not_onnx = kind("not_a_model.onnx", ClassifierOptions::default());
    assert_eq!(not_onnx.kind(), ErrorKind::InvalidModel);
    assert!(not_onnx.to_string().contains("not_a_model.onnx"), "{not_onnx}");
    let no_contract = kind("model_no_contract.onnx", ClassifierOptions::default());
    assert_eq!(no_contract.kind(), ErrorKind::Contract);
    assert!(no_contract.to_string().contains("no butterfly_onnx contract"), "{no_contract}");
    // Labels alone are not enough without a contract.
    let labels: Vec<String> = (0..7).map(|i| format!("class {i}")).collect();
    let partial =
        kind("model_no_contract.onnx", ClassifierOptions { labels: Some(labels.clone()), ..Default::default() });
    assert_eq!(partial.kind(), ErrorKind::Contract);
    // A label count that does not fit the model's output.
    let wrong_count =
        kind("model.onnx", ClassifierOptions { labels: Some(labels[..3].to_vec()), ..Default::default() });
    assert_eq!(wrong_count.kind(), ErrorKind::Contract);
    assert!(wrong_count.to_string().contains("3 labels"), "{wrong_count}");
    let duplicate = kind("model.onnx", ClassifierOptions { labels: Some(vec!["a".into(); 7]), ..Default::default() });
    assert_eq!(duplicate.kind(), ErrorKind::Contract);
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
    assert_eq!(error.kind(), ErrorKind::Contract);
    assert!(error.to_string().contains("96"), "{error}");
}

// -- the streaming pipeline ---------------------------------------------------------------

/// Good photos with bad inputs interleaved, `n` long.
fn mixed_inputs(fx: &Fixture, n: usize) -> Vec<ImageInput> {
    let images = fx.images();
    let bad = [fx.path("bad/text.jpg"), fx.path("no/such/image.png"), fx.path("bad/empty.jpg")];
    (0..n)
        .map(|i| {
            if i % 5 == 3 {
                ImageInput::Path(bad[i % 3].clone())
            } else {
                ImageInput::Path(images[i % images.len()].clone())
            }
        })
        .collect()
}

#[test]
fn the_stream_gives_the_one_shot_answers_in_input_order_with_failures_in_place() {
    let Some(fx) = fixture() else { return };
    let classifier = open(fx, "model.onnx", ClassifierOptions { threads: Some(2), ..Default::default() }).unwrap();
    let inputs = mixed_inputs(fx, 23);
    let (predictions, errors) = classifier.predict(&inputs, 3).unwrap();
    assert!(!errors.is_empty());
    for chunk_size in [1, 3, 7, 23, 1000] {
        let results: Vec<_> =
            classifier.predict_stream(inputs.clone(), 3, chunk_size).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(results.len(), inputs.len(), "chunk {chunk_size}");
        let (mut good, mut bad) = (predictions.iter(), errors.iter());
        for (position, result) in results.iter().enumerate() {
            assert_eq!((result.index, result.source.as_str()), (position, inputs[position].source().as_str()));
            match &result.outcome {
                Ok(top) => {
                    let (index, want) = good.next().unwrap();
                    assert_eq!(*index, position);
                    assert_eq!(
                        top.iter().map(|p| p.index).collect::<Vec<_>>(),
                        want.iter().map(|p| p.index).collect::<Vec<_>>()
                    );
                    assert!(
                        max_abs_diff(top.iter().map(|p| p.probability), want.iter().map(|p| p.probability)) <= 1e-6
                    );
                }
                Err(error) => {
                    let (index, want) = bad.next().unwrap();
                    assert_eq!((*index, error.kind()), (position, want.kind()));
                    assert_eq!(error.source_name().unwrap(), inputs[position].source());
                }
            }
        }
        assert!(good.next().is_none() && bad.next().is_none());
    }
}

#[test]
fn logits_chunks_match_the_reference_whatever_the_model_batch() {
    let Some(fx) = fixture() else { return };
    let images = fx.images();
    let reference = fx.reference_logits();
    for (model, model_batch) in
        [("model.onnx", Some(1)), ("model.onnx", Some(4)), ("model.onnx", None), ("model_static2.onnx", None)]
    {
        let classifier = open(fx, model, ClassifierOptions { model_batch, ..Default::default() }).unwrap();
        if let Some(size) = model_batch {
            assert_eq!(classifier.model_batch(), size);
        }
        let measured = classifier.model_batch();
        assert!((1..=*butterfly_onnx::classifier::MAX_MODEL_BATCH).contains(&measured), "{measured}");
        if model == "model_static2.onnx" {
            assert_eq!(measured, 2, "a fixed batch axis is the model batch");
        }
        let mut rows = Vec::new();
        let mut next_start = 0;
        for chunk in classifier.logits_stream(paths(&images), 4).unwrap() {
            let chunk = chunk.unwrap();
            assert_eq!(chunk.start, next_start);
            next_start += chunk.len();
            assert!(chunk.len() <= 4 && chunk.errors.is_empty());
            assert_eq!(chunk.logits.shape(), [chunk.len(), 7]);
            rows.extend(chunk.logits.outer_iter().map(|r| r.to_vec()));
        }
        assert_eq!(rows.len(), reference.len());
        for (row, want) in rows.iter().zip(&reference) {
            assert!(max_abs_diff(row.iter().copied(), want.iter().copied()) <= 1e-5, "{model}: {row:?} vs {want:?}");
        }
    }
    let error = open(fx, "model.onnx", ClassifierOptions { model_batch: Some(0), ..Default::default() }).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn the_stream_holds_at_most_two_chunks_and_takes_inputs_lazily() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let Some(fx) = fixture() else { return };
    let classifier = open(fx, "model.onnx", ClassifierOptions { threads: Some(2), ..Default::default() }).unwrap();
    let inputs = mixed_inputs(fx, 40);
    let chunk = 4;
    let taken = AtomicUsize::new(0);
    let counted = inputs.iter().cloned().inspect(|_| {
        taken.fetch_add(1, Ordering::SeqCst);
    });
    let mut stream = classifier.predict_stream(counted, 1, chunk).unwrap();
    for seen in 0..inputs.len() {
        let result = stream.next().unwrap().unwrap();
        assert_eq!(result.index, seen);
        // Inputs taken: the chunk being returned and at most one more being decoded.
        let chunk_end = (seen / chunk + 1) * chunk;
        let pulled = taken.load(Ordering::SeqCst);
        assert!(pulled <= chunk_end + chunk, "after result {seen}: {pulled} inputs taken");
        assert!(pulled >= chunk_end.min(inputs.len()));
    }
    assert!(stream.next().is_none());
    // A stream dropped half way leaves nothing hanging, and the classifier still works.
    let mut partial = classifier.predict_stream(inputs.clone(), 1, 3).unwrap();
    partial.next().unwrap().unwrap();
    drop(partial);
    assert!(classifier.predict_stream(Vec::new(), 1, 3).unwrap().next().is_none());
    let error = classifier.predict_stream(inputs, 1, 0).err().unwrap();
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn threads_are_shared_out_as_concurrent_runs_with_the_same_results() {
    use butterfly_onnx::classifier::pipeline::{
        thread_split, MAX_CONCURRENT_RUNS, MAX_MODEL_BATCH, RUN_TARGET, SESSION_MEMORY_BUDGET,
    };
    // The constants are the shared file's (python/butterfly_onnx/data/thread_rule.json, read
    // by the python backend too), and the rule (classifier::pipeline, "Threads") is
    // runs = min(N, max runs, budget / model size), at least 1; N / runs intra-op threads.
    let rule: serde_json::Value =
        serde_json::from_str(include_str!("../../../python/butterfly_onnx/data/thread_rule.json")).unwrap();
    let max_runs = rule["max_concurrent_runs"].as_u64().unwrap() as usize;
    let budget = rule["session_memory_budget_mib"].as_u64().unwrap() * 1024 * 1024;
    assert_eq!((*MAX_CONCURRENT_RUNS, *SESSION_MEMORY_BUDGET), (max_runs, budget));
    assert_eq!(*MAX_MODEL_BATCH as u64, rule["max_model_batch"].as_u64().unwrap());
    assert_eq!(RUN_TARGET.as_secs_f64(), rule["run_target_seconds"].as_f64().unwrap());
    for model_bytes in [0, 1, 18 << 20, budget / 3, budget / 2, budget / 2 + 1, budget, budget + 1, 330 << 20] {
        for threads in 0..=17 {
            let runs = threads.min(max_runs).min((budget / model_bytes.max(1)) as usize).max(1);
            let want = (runs, (threads / runs).max(1));
            assert_eq!(thread_split(threads, model_bytes), want, "threads={threads} model_bytes={model_bytes}");
        }
    }
    let Some(fx) = fixture() else { return };
    let mut images = fx.images();
    images.truncate(7);
    let reference = fx.reference_logits();
    for model in ["model.onnx", "model_static2.onnx"] {
        let serial =
            open(fx, model, ClassifierOptions { threads: Some(1), model_batch: Some(1), ..Default::default() })
                .unwrap();
        let (want, _) = serial.logits(&paths(&images)).unwrap();
        for threads in [2, 3, 5] {
            let options = ClassifierOptions { threads: Some(threads), model_batch: Some(1), ..Default::default() };
            let classifier = open(fx, model, options).unwrap();
            let bytes = std::fs::metadata(fx.path(model)).unwrap().len();
            assert_eq!(classifier.thread_split(), thread_split(threads, bytes));
            // One-shot: the batch split over the runs (7 rows, odd, padded on the fixed model).
            let (got, _) = classifier.logits(&paths(&images)).unwrap();
            assert!(max_abs_diff(got.iter().copied(), want.iter().copied()) <= 1e-6, "{model} threads={threads}");
            // Streamed: pieces of one row dealt to the runs; rows still in input order.
            let rows: Vec<Vec<f32>> = classifier
                .logits_stream(paths(&images), 5)
                .unwrap()
                .flat_map(|chunk| chunk.unwrap().logits.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>())
                .collect();
            assert_eq!(rows.len(), images.len());
            for (row, want) in rows.iter().zip(&reference) {
                assert!(max_abs_diff(row.iter().copied(), want.iter().copied()) <= 1e-5, "{model}: {row:?}");
            }
        }
    }
}

// -- the near-tie fallback ---------------------------------------------------------------------

#[test]
fn near_ties_are_answered_by_the_fallback_model_as_in_python() {
    let Some(fx) = fixture() else { return };
    let reference = &fx.reference["fallback"];
    let margin = reference["margin"].as_f64().unwrap();
    let expected: Vec<Vec<f32>> = reference["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect();
    let near: Vec<usize> =
        reference["near_ties"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
    let images = paths(&fx.images());
    assert!(!near.is_empty() && near.len() < images.len(), "{near:?}");

    let variant = open(fx, "model_variant.onnx", ClassifierOptions::default()).unwrap();
    let (plain, _) = variant.logits(&images).unwrap();
    assert_eq!(butterfly_onnx::classifier::near_ties(plain.view(), margin as f32), near);

    let fallback = open(fx, "model.onnx", ClassifierOptions::default()).unwrap();
    let classifier = variant.with_fallback(fallback, None).unwrap();
    assert_eq!(classifier.fallback_margin(), Some(margin));
    let (logits, errors) = classifier.logits(&images).unwrap();
    assert!(errors.is_empty());
    for (row, want) in logits.outer_iter().zip(&expected) {
        assert!(max_abs_diff(row.iter().copied(), want.iter().copied()) <= 1e-5, "{row} vs {want:?}");
    }
    assert_eq!(classifier.fallbacks(), near.len());
    // The streaming pipeline answers the same rows, chunk by chunk.
    for chunk_size in [1, 3] {
        let rows: Vec<Vec<f32>> = classifier
            .logits_stream(images.clone(), chunk_size)
            .unwrap()
            .flat_map(|chunk| chunk.unwrap().logits.outer_iter().map(|row| row.to_vec()).collect::<Vec<_>>())
            .collect();
        for (row, want) in rows.iter().zip(&expected) {
            assert!(max_abs_diff(row.iter().copied(), want.iter().copied()) <= 1e-5, "{row:?} vs {want:?}");
        }
    }
    assert_eq!(classifier.fallbacks(), 3 * near.len());
}

#[test]
fn fallback_arguments_are_checked() {
    let Some(fx) = fixture() else { return };
    let reason = |result: Result<Classifier, Error>| result.unwrap_err().to_string();
    let plain = || open(fx, "model.onnx", ClassifierOptions::default()).unwrap();
    let variant = || open(fx, "model_variant.onnx", ClassifierOptions::default()).unwrap();
    assert!(reason(plain().with_fallback(plain(), None))
        .ends_with("model.onnx: records no fallback_margin (an int8 variant written by export_onnx does): give one"));
    for bad in [-0.1, f64::NAN, f64::INFINITY] {
        assert!(reason(variant().with_fallback(plain(), Some(bad)))
            .contains("fallback_margin must be a finite number >= 0"));
    }
    let mut labels: Vec<String> = plain().labels().to_vec();
    labels.reverse();
    let relabelled = open(fx, "model.onnx", ClassifierOptions { labels: Some(labels), ..Default::default() }).unwrap();
    let error = variant().with_fallback(relabelled, None).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Contract);
    assert!(error.to_string().contains("model.onnx: its labels differ from "), "{error}");
    assert!(error.to_string().ends_with("model_variant.onnx's, so it cannot answer that model's near-ties"));
    // 0 is plain: nothing runs twice.
    let none = variant().with_fallback(plain(), Some(0.0)).unwrap();
    let (logits, _) = none.logits(&paths(&fx.images())).unwrap();
    assert_eq!(logits, variant().logits(&paths(&fx.images())).unwrap().0);
    assert_eq!(none.fallbacks(), 0);
}
