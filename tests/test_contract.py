"""The model contract (python/butterfly_onnx/contract.py): the one writer and the Python reader."""

import json
from pathlib import Path

import pytest

import butterfly_onnx.errors as errors
from butterfly_onnx.contract import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_SIZE,
    METADATA_KEY,
    SCHEMA_VERSION,
    ModelContract,
    PreprocessSpec,
    check_output,
    current_resample_order,
    resolve_contract,
    write_contract,
)
from butterfly_onnx.errors import ContractError

FIXTURES = Path(__file__).parent / "fixtures" / "contracts"
RESOLVE_CASES = Path(__file__).parent / "fixtures" / "resolve" / "cases.json"
RESAMPLE_TABLE = Path(__file__).parents[1] / "python" / "butterfly_onnx" / "data" / "resample_orders.json"


def _contract(**overrides):
    fields = dict(labels=("admiral", "monarch", "swallowtail"), preprocess=PreprocessSpec(256, 224))
    fields.update(overrides)
    return ModelContract(**fields)


def test_round_trip_through_metadata():
    contract = _contract(provenance={"arch": "resnet18", "metrics": {"val_acc1": 0.91}})
    metadata = contract.to_metadata()
    assert list(metadata) == [METADATA_KEY]
    document = json.loads(metadata[METADATA_KEY])
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["preprocess"]["resample_order"] == current_resample_order()
    assert ModelContract.from_metadata(metadata) == contract


@pytest.mark.parametrize("version, expected", json.loads(RESAMPLE_TABLE.read_text())["examples"])
def test_resample_order_follows_pillow_version(version, expected):
    """The examples of data/resample_orders.json (the Rust tests check the same ones)."""
    assert current_resample_order(version) == expected


def test_missing_contract_names_the_model_and_the_way_out():
    with pytest.raises(ContractError, match=r"butterfly\.onnx.*no butterfly_onnx contract.*labels="):
        ModelContract.from_metadata({"other": "1"}, source="butterfly.onnx")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(schema_version=2), "schema_version 2"),
        (lambda d: d.pop("labels"), "missing 'labels'"),
        (lambda d: d.update(labels=["a", "a"]), "unique"),
        (lambda d: d.update(labels=[]), "empty"),
        (lambda d: d["preprocess"].update(crop_size=0), "crop_size"),
        (lambda d: d["preprocess"].update(interpolation="lanczos"), "interpolation"),
        (lambda d: d["preprocess"].update(resample_order="pillow_9"), "resample_order"),
        (lambda d: d["preprocess"].update(std=[0.2, 0.0, 0.2]), "std"),
        (lambda d: d["preprocess"].update(mean=[0.5, 0.5]), "mean"),
        (lambda d: d["preprocess"].update(gamma=2.2), "unknown fields"),
        (lambda d: d["preprocess"].update(max_size=200), "max_size"),
        (lambda d: d["output"].update(kind="embeddings"), "kind"),
        (lambda d: d["input"].update(layout="NHWC"), "NCHW"),
    ],
)
def test_invalid_documents_are_rejected(mutate, message):
    document = _contract().to_dict()
    mutate(document)
    with pytest.raises(ContractError, match=message):
        ModelContract.from_metadata({METADATA_KEY: json.dumps(document)}, source="m.onnx")


def test_not_json_is_a_contract_error():
    with pytest.raises(ContractError, match="m.onnx.*not valid JSON"):
        ModelContract.from_metadata({METADATA_KEY: "{labels"}, source="m.onnx")


def raw_document(case: dict) -> str:
    """The metadata value as a model would carry it (same rule as the Rust test's
    ``raw_document``): the document itself when it is a string, else its JSON text; then
    padded with spaces to ``pad_to_bytes`` UTF-8 bytes when the case says so."""
    raw = case["document"] if isinstance(case["document"], str) else json.dumps(case["document"])
    if "pad_to_bytes" in case:
        raw += " " * (case["pad_to_bytes"] - len(raw.encode("utf-8")))
    return raw


def contract_fixtures() -> list[tuple[str, dict]]:
    cases = sorted(FIXTURES.glob("*.json"))
    assert len(cases) >= 8, "the shared contract fixtures are missing"
    return [(case.name, json.loads(case.read_text(encoding="utf-8"))) for case in cases]


def test_shared_fixtures_agree_with_their_expected_outcome():
    """The same documents are read by the Rust reader (rust/butterfly-onnx/tests/contract.rs)."""
    for name, spec in contract_fixtures():
        raw = raw_document(spec)
        if spec["valid"]:
            contract = ModelContract.from_metadata({METADATA_KEY: raw}, source=name)
            assert list(contract.labels) == spec["expect"]["labels"], name
            assert contract.preprocess.crop_size == spec["expect"]["crop_size"], name
            for key, value in spec["expect"].get("preprocess", {}).items():
                got = getattr(contract.preprocess, key)
                assert (list(got) if isinstance(got, tuple) else got) == value, (name, key)
        else:
            with pytest.raises(ContractError) as caught:
                ModelContract.from_metadata({METADATA_KEY: raw}, source=name)
            message = str(caught.value)
            assert message.startswith(f"{name}: "), f"{name}: the message must name the model: {message}"
            assert spec.get("error_contains", "") in message, f"{name}: {message!r}"


def _resolve_case(case: dict, source: str):
    contract = case["contract"]
    metadata = (
        {} if contract is None else {METADATA_KEY: contract if isinstance(contract, str) else json.dumps(contract)}
    )

    def port(entry):
        dtype = "tensor(float)" if entry["dtype"] == "float32" else f"tensor({entry['dtype']})"
        return (entry["name"], entry["shape"], dtype)

    preprocess = None if case["preprocess"] is None else PreprocessSpec.coerce(case["preprocess"])
    return resolve_contract(
        metadata,
        labels=case["labels"],
        preprocess=preprocess,
        inputs=[port(e) for e in case["inputs"]],
        outputs=[port(e) for e in case["outputs"]],
        source=source,
    )


def test_shared_resolve_cases():
    """tests/fixtures/resolve/cases.json: the effective contract (or the error class and a
    fragment of its message) of each case; rust/butterfly-onnx/tests/contract.rs reads the
    same table with contract::resolve."""
    table = json.loads(RESOLVE_CASES.read_text(encoding="utf-8"))
    assert len(table["cases"]) >= 40
    for case in table["cases"]:
        name = case["name"]
        if "error" in case:
            cls = getattr(errors, case["error"]["class"])
            with pytest.raises(errors.ButterflyError) as caught:
                _resolve_case(case, table["source"])
            assert type(caught.value) is cls, (name, caught.value)
            assert case["error"]["contains"] in str(caught.value), (name, str(caught.value))
        else:
            contract = _resolve_case(case, table["source"])
            want = case["expect"]
            assert list(contract.labels) == want["labels"], name
            assert contract.preprocess == PreprocessSpec.from_dict(want["preprocess"]), name
            assert (contract.input_name, contract.output_name, contract.output_kind) == (
                want["input_name"],
                want["output_name"],
                want["output_kind"],
            ), name


def test_resolve_names_the_model_in_every_error():
    table = json.loads(RESOLVE_CASES.read_text(encoding="utf-8"))
    for case in (c for c in table["cases"] if "error" in c and c["preprocess"] is None):
        with pytest.raises(errors.ModelError) as caught:
            _resolve_case(case, "zoo/butterfly.onnx")
        assert str(caught.value).startswith("zoo/butterfly.onnx: "), (case["name"], str(caught.value))


def test_limits_are_the_documented_ones():
    assert (MAX_SIZE, MAX_DEPTH, MAX_DOCUMENT_BYTES) == (8192, 64, 1 << 20)
    PreprocessSpec(MAX_SIZE - 1, MAX_SIZE, max_size=MAX_SIZE)
    for bad in (
        dict(resize_size=MAX_SIZE + 1, crop_size=224),
        dict(resize_size=256, crop_size=2**31),
        dict(resize_size=256, crop_size=10**5000),
        dict(resize_size=256, crop_size=224, max_size=2**64),
    ):
        with pytest.raises(ContractError, match="8192"):
            PreprocessSpec(**bad)
    for field, bad in (
        ("std", (1e-300, 1, 1)),
        ("std", (0.5, 0.5, 1e300)),
        ("mean", (1e300, 0, 0)),
        ("mean", (10**400, 0, 0)),
        ("std", (float("nan"), 1, 1)),
        ("mean", (0, float("-inf"), 0)),
    ):
        with pytest.raises(ContractError, match=field):
            PreprocessSpec(256, 224, **{field: bad})


def test_python_values_get_the_same_limits_without_raw_errors():
    deep: dict = {}
    for _ in range(5000):
        deep = {"n": deep}
    with pytest.raises(ContractError, match="nests deeper"):
        ModelContract(labels=("a",), preprocess=PreprocessSpec(256, 224), provenance=deep)
    document = _contract().to_dict()
    document["provenance"] = deep
    with pytest.raises(ContractError, match="m.onnx.*nests deeper"):
        ModelContract.from_dict(document, source="m.onnx")
    with pytest.raises(ContractError, match="JSON-serialisable"):
        ModelContract(labels=("a",), preprocess=PreprocessSpec(256, 224), provenance={"loss": float("nan")})
    with pytest.raises(ContractError, match="lone surrogate"):
        ModelContract(labels=("a\ud800",), preprocess=PreprocessSpec(256, 224))
    with pytest.raises(ContractError, match="m.onnx.*must be JSON text"):
        ModelContract.from_metadata({METADATA_KEY: b"{}"}, source="m.onnx")
    with pytest.raises(ContractError, match="bytes, more than the limit"):
        ModelContract(
            labels=tuple(f"class {i:07d}" for i in range(80_000)), preprocess=PreprocessSpec(256, 224)
        ).to_json()


def test_check_output_is_the_run_time_half():
    contract = _contract()
    check_output(contract, (4, 3), "m.onnx", rows=4)
    check_output(contract, (7, 3), "m.onnx")
    for shape, rows in (((4, 5), 4), ((4, 3), 2), ((4, 3, 1), None), ((12,), None)):
        with pytest.raises(
            ContractError, match=r"m.onnx: the model output has shape .*, but the contract has 3 labels"
        ):
            check_output(contract, shape, "m.onnx", rows=rows)


def test_coerce_is_the_one_converter():
    spec = PreprocessSpec(256, 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert PreprocessSpec.coerce(spec) is spec
    assert PreprocessSpec.coerce(spec.to_dict()) == spec
    lenient = PreprocessSpec.coerce({"resize_size": 256, "crop_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3})
    assert lenient == spec  # interpolation bilinear, max_size None, the installed Pillow's order
    with pytest.raises(ContractError, match=r"the preprocess of x is missing \['mean', 'std'\]"):
        PreprocessSpec.coerce({"resize_size": 256, "crop_size": 224}, what="the preprocess of x")
    with pytest.raises(ContractError, match="unknown fields"):
        PreprocessSpec.coerce({**spec.to_dict(), "gamma": 2.2})
    with pytest.raises(ContractError, match="cannot read a preprocessing spec"):
        PreprocessSpec.coerce(42)
    with pytest.raises(ContractError, match="None"):
        PreprocessSpec.coerce(None)


torchvision = pytest.importorskip("torchvision")


def test_spec_from_every_default_torchvision_preset():
    from torchvision.models import get_model_weights, list_models

    for arch in list_models(module=torchvision.models):
        weights = get_model_weights(arch).DEFAULT
        preset = weights.transforms()
        spec = PreprocessSpec.from_transforms(preset)
        assert (spec.resize_size, spec.crop_size) == (preset.resize_size[0], preset.crop_size[0]), arch
        assert spec.mean == tuple(preset.mean) and spec.std == tuple(preset.std), arch
        assert spec.interpolation == preset.interpolation.value, arch
        assert PreprocessSpec.coerce(preset) == spec, arch


def test_spec_from_compose_and_its_limits():
    import torchvision.transforms as T

    spec = PreprocessSpec.from_transforms(
        T.Compose([T.Resize(160, max_size=400), T.CenterCrop(128), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    )
    assert (spec.resize_size, spec.crop_size, spec.max_size, spec.mean) == (160, 128, 400, (0.5, 0.5, 0.5))
    with pytest.raises(ContractError, match="single int"):
        PreprocessSpec.from_transforms(
            T.Compose([T.Resize((200, 300)), T.CenterCrop(128), T.Normalize([0] * 3, [1] * 3)])
        )
    with pytest.raises(ContractError, match="ColorJitter"):
        PreprocessSpec.from_transforms(T.Compose([T.Resize(200), T.ColorJitter(), T.CenterCrop(128)]))
    with pytest.raises(ContractError, match="nearest"):
        PreprocessSpec.from_transforms(T.Compose([T.Resize(200, interpolation=T.InterpolationMode.NEAREST)]))


def test_write_contract_checks_names_and_replaces(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    write_contract(path, _contract())
    write_contract(path, _contract(labels=("a", "b", "c")))
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert list(props) == [METADATA_KEY]
    assert ModelContract.from_metadata(props).labels == ("a", "b", "c")
    with pytest.raises(ContractError, match="no input 'pixels'"):
        write_contract(path, _contract(input_name="pixels"))
    with pytest.raises(ContractError, match="no output 'probs'"):
        write_contract(path, _contract(output_name="probs"))


# -- end to end: contracts written into a model's metadata, opened by both backends ----------
def _tiny_model(
    path: Path, raw: str, *, classes: int = 3, input_name: str = "input", output_name: str = "logits"
) -> Path:
    """A classifier graph (global average pool + a 3 x classes matmul) with dynamic batch,
    height and width, whose metadata holds ``raw`` as the contract -- written with onnx
    directly, bypassing write_contract's checks, as a foreign or tampered file would be."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.linspace(-1, 1, 3 * classes, dtype=np.float32).reshape(3, classes), "w")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [input_name], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], [output_name]),
        ],
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", classes])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, raw
    onnx.save(model, str(path))
    return path


@pytest.fixture(params=["python", "rust"])
def backend(request):
    pytest.importorskip("onnxruntime")
    from contract_models import require_backend

    require_backend(request.param)
    return request.param


def test_every_contract_fixture_end_to_end(backend, tmp_path):
    """Each shared fixture written into a model file: the invalid ones are a ContractError
    naming the model on this backend (never an abort, a panic or a raw Python error), the
    valid ones open with the fixture's labels and crop size."""
    from butterfly_onnx import Classifier

    for name, case in contract_fixtures():
        raw = raw_document(case)
        if case["valid"]:
            expect = case["expect"]
            contract = ModelContract.from_metadata({METADATA_KEY: raw})
            path = _tiny_model(
                tmp_path / name.replace(".json", ".onnx"),
                raw,
                classes=len(expect["labels"]),
                input_name=contract.input_name,
                output_name=contract.output_name,
            )
            clf = Classifier(path, backend=backend)
            assert list(clf.labels) == expect["labels"], name
            assert clf.contract.preprocess.crop_size == expect["crop_size"], name
        else:
            path = _tiny_model(tmp_path / name.replace(".json", ".onnx"), raw)
            with pytest.raises(ContractError) as caught:
                Classifier(path, backend=backend)
            message = str(caught.value)
            assert str(path) in message, (name, message)
            assert case.get("error_contains", "") in message, (name, message)


def test_bad_explicit_preprocess_is_a_contract_error(backend, tmp_path):
    from butterfly_onnx import Classifier

    path = _tiny_model(tmp_path / "m.onnx", "{labels")
    good = {"resize_size": 32, "crop_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    for bad in (
        {**good, "crop_size": 100000},
        {**good, "crop_size": 2**31},
        {**good, "std": [1e-300] * 3},
        {**good, "mean": [1e300] * 3},
        {**good, "resize_size": 10**30},
    ):
        with pytest.raises(ContractError, match="m.onnx: preprocess"):
            Classifier(path, backend=backend, labels=["a", "b", "c"], preprocess=bad)
    clf = Classifier(path, backend=backend, labels=["a", "b", "c"], preprocess=good)  # a foreign model
    assert clf.contract.preprocess == PreprocessSpec.coerce(good)


def test_contract_at_the_limits_gives_finite_logits_on_both_backends(tmp_path):
    """mean and std at the edges of their ranges: the input stays finite (|x| <= 1e6), the
    logits are finite, and both backends preprocess bit for bit alike."""
    import numpy as np
    from PIL import Image

    from butterfly_onnx import Classifier

    case = json.loads((FIXTURES / "valid_mean_std_at_the_limits.json").read_text())
    path = _tiny_model(tmp_path / "limits.onnx", raw_document(case))
    image = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(image)
    backends = ["python"]
    from contract_models import native_available

    if native_available()[0]:
        backends.append("rust")
    results = {}
    for name in backends:
        clf = Classifier(path, backend=name)
        batch = clf.preprocess([image])
        logits = clf.logits([image])
        assert np.isfinite(batch).all() and np.abs(batch).max() <= 1.001e6, name
        assert np.isfinite(logits).all(), name
        results[name] = (batch, logits)
    if "rust" in results:
        assert np.array_equal(results["python"][0], results["rust"][0])
        np.testing.assert_allclose(results["python"][1], results["rust"][1], rtol=1e-5)


def test_labels_must_match_a_dynamic_class_axis_at_run_time(backend, tmp_path):
    """A class axis the graph leaves dynamic is checked when the model runs: 3 labels on a
    model that outputs 3072 values per image is a ContractError on both backends (never a
    silently wrong-width logits array or a raw IndexError)."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper
    from PIL import Image

    from butterfly_onnx import Classifier

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["logits"], axis=1)],
        "flatten",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "classes"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    contract = ModelContract(labels=("a", "b", "c"), preprocess=PreprocessSpec(32, 32))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, contract.to_json()
    path = tmp_path / "dynamic_classes.onnx"
    onnx.save(model, str(path))
    image = tmp_path / "grey.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(image)
    clf = Classifier(path, backend=backend)  # nothing to check before running
    for call in (clf.logits, clf.predict):
        with pytest.raises(
            ContractError,
            match=r"dynamic_classes.onnx: the model output has shape \[1, 3072\], but the contract has 3 labels",
        ):
            call([image])


@pytest.mark.parametrize(
    "label", ["two\nlines", "tab\there", "bell\a", "esc\x1b[31m", "nel\x85", "ls\u2028", "del\x7f"]
)
def test_labels_with_control_characters_are_refused_at_export(label):
    """Export writes the contract through ModelContract and write_contract: a label holding a
    control character (Unicode Cc, or a line/paragraph separator) never gets into a model,
    as no reader accepts one (the shared fixtures invalid_label_control_*.json)."""
    with pytest.raises(ContractError, match="control characters"):
        ModelContract(labels=("admiral", label), preprocess=PreprocessSpec(256, 224))
    with pytest.raises(ContractError, match="control characters"):
        resolve_contract(
            {}, labels=["admiral", label], preprocess=PreprocessSpec(256, 224), inputs=[], outputs=[], source="m.onnx"
        )
    # Other unusual text is fine: accents, emoji, quotes, a leading '=' (written safely by the CSV writers).
    ModelContract(labels=("café", "🦋", 'say "hi"', "=1+1"), preprocess=PreprocessSpec(256, 224))
