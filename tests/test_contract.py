"""The model contract (python/butterfly_onnx/contract.py): the one writer and the Python reader."""

import json
from pathlib import Path

import pytest

from butterfly_onnx.contract import (
    METADATA_KEY,
    SCHEMA_VERSION,
    ModelContract,
    PreprocessSpec,
    current_resample_order,
    write_contract,
)
from butterfly_onnx.errors import ContractError

FIXTURES = Path(__file__).parent / "fixtures" / "contracts"


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


@pytest.mark.parametrize(
    "version, expected",
    [("11.3.0", "pillow_12_1"), ("12.1.1", "pillow_12_1"), ("12.2.0", "pillow_12_2"),
     ("12.3.0", "pillow_12_2"), ("13.0.0", "pillow_13"), ("14.1.0.dev0", "pillow_13")],
)
def test_resample_order_follows_pillow_version(version, expected):
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


def test_shared_fixtures_agree_with_their_expected_outcome():
    """The same documents are read by the Rust reader (rust/butterfly-onnx/tests/contract.rs)."""
    cases = sorted(FIXTURES.glob("*.json"))
    assert len(cases) >= 8, "the shared contract fixtures are missing"
    for case in cases:
        spec = json.loads(case.read_text())
        raw = spec["document"] if isinstance(spec["document"], str) else json.dumps(spec["document"])
        if spec["valid"]:
            contract = ModelContract.from_metadata({METADATA_KEY: raw}, source=case.name)
            assert list(contract.labels) == spec["expect"]["labels"], case.name
            assert contract.preprocess.crop_size == spec["expect"]["crop_size"], case.name
        else:
            with pytest.raises(ContractError, match=spec.get("error_contains")) as caught:
                ModelContract.from_metadata({METADATA_KEY: raw}, source=case.name)
            assert case.name in str(caught.value)


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


def test_spec_from_compose_and_its_limits():
    import torchvision.transforms as T

    spec = PreprocessSpec.from_transforms(
        T.Compose([T.Resize(160, max_size=400), T.CenterCrop(128), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    )
    assert (spec.resize_size, spec.crop_size, spec.max_size, spec.mean) == (160, 128, 400, (0.5, 0.5, 0.5))
    with pytest.raises(ContractError, match="single int"):
        PreprocessSpec.from_transforms(T.Compose([T.Resize((200, 300)), T.CenterCrop(128), T.Normalize([0] * 3, [1] * 3)]))
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
