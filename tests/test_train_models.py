"""build_model: heads of every family, weights sources, efficientnet_lite0's real ImageNet weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torch import nn  # noqa: E402

from butterfly_onnx.contract import PreprocessSpec  # noqa: E402
from butterfly_onnx.errors import ArchitectureError, TrainingError  # noqa: E402
from butterfly_onnx.train import (  # noqa: E402
    ARCHITECTURES,
    build_model,
    load_checkpoint,
    save_checkpoint,
    weights_preprocess,
)
from butterfly_onnx.train.models import classifier_head, lite0_weights_path  # noqa: E402

pytestmark = pytest.mark.train

# One small member of each head family, with the input size it runs at.
FAMILIES = [
    ("resnet18", 64),  # fc
    ("regnet_x_400mf", 64),  # fc
    ("shufflenet_v2_x0_5", 64),  # fc
    ("googlenet", 64),  # fc, aux classifiers off
    ("densenet121", 64),  # classifier is a Linear
    ("alexnet", 64),  # classifier[-1] (VGG has the same classifier Sequential)
    ("mobilenet_v3_small", 64),  # classifier[-1]
    ("mnasnet0_5", 64),  # classifier[-1]
    ("efficientnet_b0", 64),  # classifier[-1]
    ("convnext_tiny", 64),  # classifier[-1] after LayerNorm2d
    ("squeezenet1_1", 64),  # 1x1 conv classifier + num_classes
    ("vit_b_16", 32),  # heads.head
    ("swin_t", 64),  # head
    ("maxvit_t", 32),  # classifier[-1]
]


def _small(arch: str) -> nn.Module:
    """A tiny instance of the architecture's own class (same head layout as the full model),
    so each family is covered without building the big ones."""
    if arch == "densenet121":
        return torchvision.models.DenseNet(growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16)
    if arch == "convnext_tiny":
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt

        return ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)])
    if arch == "vit_b_16":
        from torchvision.models.vision_transformer import VisionTransformer

        return VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16)
    if arch == "swin_t":
        from torchvision.models.swin_transformer import SwinTransformer

        return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2])
    if arch == "maxvit_t":
        from torchvision.models.maxvit import MaxVit

        return MaxVit(
            input_size=(32, 32),
            stem_channels=8,
            block_channels=[8],
            block_layers=[1],
            head_dim=4,
            partition_size=2,
            stochastic_depth_prob=0.0,
        )
    return build_model(arch)


@pytest.mark.parametrize("arch,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_head_replacement_every_family(arch, size):
    from butterfly_onnx.train.models import replace_head

    torch.manual_seed(0)
    model = _small(arch).eval()
    parent, attr, old = classifier_head(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    replace_head(model, 7)
    _, _, new = classifier_head(model)
    assert new is not old
    assert (new.out_features if isinstance(new, nn.Linear) else new.out_channels) == 7
    # Only the head's tensors changed: the backbone is untouched.
    after = model.state_dict()
    changed = {
        k for k in after if k not in before or after[k].shape != before[k].shape or not torch.equal(after[k], before[k])
    }
    head_names = {n for n, m in model.named_modules() if m is new}
    assert changed == {f"{h}.{name}" for h in head_names for name, _ in new.named_parameters()}
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 7)


def test_build_model_by_name_sets_head_and_keeps_it():
    model = build_model("squeezenet1_1", num_classes=5)
    assert model.num_classes == 5 and model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 5)
    assert build_model("mobilenet_v3_small").eval()(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    googlenet = build_model("googlenet", num_classes=3)
    assert googlenet.aux1 is None
    assert googlenet.train()(torch.rand(2, 3, 64, 64)).shape == (2, 3)  # plain logits, not a tuple


def test_unknown_architecture_lists_close_matches():
    with pytest.raises(ArchitectureError, match=r"unknown architecture 'resnet19'; did you mean resnet18"):
        build_model("resnet19")
    with pytest.raises(ArchitectureError, match="unknown architecture"):
        weights_preprocess("not_a_model")
    with pytest.raises(
        ArchitectureError,
        match=r"unknown weights 'IMAGENET9K' for resnet18; choose one of \['DEFAULT', 'IMAGENET1K_V1'\]",
    ):
        build_model("resnet18", weights="IMAGENET9K")
    with pytest.raises(ArchitectureError, match="num_classes"):
        build_model("resnet18", num_classes=0)


def test_architectures_cover_torchvision():
    assert set(torchvision.models.list_models(module=torchvision.models)) | {"efficientnet_lite0"} == set(ARCHITECTURES)


def test_weights_preprocess_comes_from_torchvision_weights():
    for arch in ("resnet50", "swin_t", "inception_v3"):
        transforms = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        spec = weights_preprocess(arch, "DEFAULT")
        assert (spec.resize_size, spec.crop_size) == (transforms.resize_size[0], transforms.crop_size[0])
        assert spec.mean == tuple(transforms.mean) and spec.std == tuple(transforms.std)
        assert spec.interpolation == transforms.interpolation.value
    v1 = weights_preprocess("resnet50", "ResNet50_Weights.IMAGENET1K_V1")
    assert (v1.resize_size, v1.crop_size) == (256, 224)
    assert weights_preprocess("resnet50", "IMAGENET1K_V2").resize_size == 232


def test_local_weights_file_roundtrip(tmp_path):
    torch.manual_seed(1)
    source = build_model("mobilenet_v3_small", num_classes=4).eval()
    path = tmp_path / "state.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model("mobilenet_v3_small", weights=path).eval()  # head size read from the file
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    rehead = build_model("mobilenet_v3_small", weights=str(path), num_classes=6)
    assert classifier_head(rehead)[2].out_features == 6
    with pytest.raises(ArchitectureError, match="do not fit"):
        build_model("resnet18", weights=path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ArchitectureError, match="junk.pt"):
        build_model("resnet18", weights=tmp_path / "junk.pt")


def test_checkpoint_roundtrip_and_bad_files(tmp_path):
    torch.manual_seed(2)
    model = build_model("mobilenet_v3_small", num_classes=3).eval()
    spec = weights_preprocess("mobilenet_v3_small")
    config = {
        "arch": "mobilenet_v3_small",
        "num_classes": 3,
        "labels": ["a", "b", "c"],
        "weights": None,
        "preprocess": spec,
        "metrics": {"val_acc1": 0.5},
        "epoch": 2,
        "train_config": {"lr": 1e-3},
    }
    path = save_checkpoint(tmp_path / "ck" / "best.pt", model, config)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "butterfly_onnx.checkpoint" and raw["format_version"] == 1
    loaded, loaded_config = load_checkpoint(path)
    assert not loaded.training
    assert loaded_config["labels"] == ["a", "b", "c"]
    assert PreprocessSpec.from_dict(loaded_config["preprocess"]) == spec
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"model_state": {}}, tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="other.pt is not a butterfly_onnx checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


# --- EfficientNet-Lite0 with its real ImageNet weights -----------------------------------------
@pytest.fixture(scope="module")
def lite0():
    return build_model("efficientnet_lite0", weights="DEFAULT").eval()


def test_lite0_architecture_and_strict_load(lite0):
    from torchvision.ops.misc import SqueezeExcitation

    assert not any(isinstance(m, (SqueezeExcitation, nn.SiLU)) for m in lite0.modules())
    assert any(isinstance(m, nn.ReLU6) for m in lite0.modules())
    assert all(m.eps == 1e-3 for m in lite0.modules() if isinstance(m, nn.BatchNorm2d))
    package = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    state = lite0.state_dict()
    assert len(state) == len(package)  # every tensor mapped, none left over
    assert torch.equal(state["features.0.0.weight"], package["_conv_stem.weight"])
    assert torch.equal(state["features.7.0.block.3.0.weight"], package["_blocks.15._project_conv.weight"])
    assert torch.equal(state["classifier.1.weight"], package["_fc.weight"])
    spec = weights_preprocess("efficientnet_lite0")
    assert spec.mean == spec.std == (0.5, 0.5, 0.5) and spec.interpolation == "bilinear"


def _imagenet_top5(model, image) -> list[str]:
    from butterfly_onnx.train.transforms import eval_transforms

    categories = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
    with torch.no_grad():
        logits = model(eval_transforms(weights_preprocess("efficientnet_lite0"))(image)[None])
    return [categories[i] for i in logits[0].topk(5).indices.tolist()]


def test_lite0_predicts_real_photos(lite0):
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data")
    cat = _imagenet_top5(lite0, Image.fromarray(skimage_data.chelsea()))
    assert cat[0] in {"tabby", "tiger cat", "Egyptian cat"}, cat
    coffee = _imagenet_top5(lite0, Image.fromarray(skimage_data.coffee()))
    assert coffee[0] == "espresso", coffee
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    china = _imagenet_top5(lite0, Image.fromarray(sklearn_datasets.load_sample_images().images[0]))
    assert china[0] in {"palace", "bell cote", "monastery", "pagoda"}, china


def test_lite0_local_file_and_bad_weights(lite0, tmp_path):
    path = tmp_path / "lite0.pt"
    torch.save(lite0.state_dict(), path)  # torchvision layout
    again = build_model("efficientnet_lite0", weights=path, num_classes=2)
    own = {k: v for k, v in again.state_dict().items() if not k.startswith("classifier.1")}
    assert all(torch.equal(v, lite0.state_dict()[k]) for k, v in own.items())
    with pytest.raises(ArchitectureError, match="unknown weights 'IMAGENET1K_V1' for efficientnet_lite0"):
        build_model("efficientnet_lite0", weights="IMAGENET1K_V1")


@pytest.mark.parametrize(
    ("size", "kernel", "stride"), [(224, 3, 2), (112, 5, 2), (15, 3, 2), (28, 5, 2), (9, 3, 1), (7, 5, 3)]
)
def test_same_padded_conv_matches_onnx_same_upper(size, kernel, stride):
    """Conv2dSame against ONNX Runtime's Conv with ``auto_pad="SAME_UPPER"`` (ONNX's name for
    TensorFlow's SAME: the odd extra row and column at the end), depthwise as in Lite0."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from butterfly_onnx.train.models import Conv2dSame

    torch.manual_seed(0)
    conv = Conv2dSame(4, 4, kernel, stride=stride, padding=0, groups=4, bias=True).eval()
    x = torch.randn(2, 4, size, size)
    node = helper.make_node(
        "Conv",
        ["x", "w", "b"],
        ["y"],
        auto_pad="SAME_UPPER",
        group=4,
        strides=[stride, stride],
        kernel_shape=[kernel, kernel],
    )
    graph = helper.make_graph(
        [node],
        "same",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(conv.weight.detach().numpy(), "w"),
            numpy_helper.from_array(conv.bias.detach().numpy(), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        got = conv(x).numpy()
    assert got.shape == expected.shape == (2, 4, -(-size // stride), -(-size // stride))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_lite0_pads_as_tensorflow_and_exports_one_conv_per_layer(lite0, tmp_path):
    """The strided convs of Lite0 pad as its TensorFlow training did; the ONNX export has no Pad
    node (an asymmetric ``pads`` attribute instead), and ONNX Runtime agrees with torch."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from butterfly_onnx import export_onnx
    from butterfly_onnx.train.models import LITE0_PREPROCESS, Conv2dSame

    strided = [m for m in lite0.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert len(strided) == 5 and all(isinstance(m, Conv2dSame) for m in strided)  # stem + 4 depthwise
    path = tmp_path / "lite0.onnx"
    export_onnx(lite0, path, labels=[f"c{i}" for i in range(1000)], preprocess=LITE0_PREPROCESS, verify=False)
    graph = onnx.load(str(path)).graph
    assert "Pad" not in {n.op_type for n in graph.node}
    pads = [list(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert pads.count([0, 0, 1, 1]) == 3 and pads.count([1, 1, 2, 2]) == 2  # 3x3 and 5x5 at stride 2
    x = torch.randn(3, 3, 224, 224)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = lite0(x).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], expected, atol=1e-4)
