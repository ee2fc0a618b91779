"""finetune() (train/loop.py): a real fine-tune on real photos with its linear probe (checked
against scikit-learn on torchvision's features) and the probe fallback, the cached head phase,
resume after an interruption (bit-identical, cache in place; changed settings applied or
refused), DDP with 2 CPU processes, outputs (checkpoints, metrics, plots), the settings object
and configuration errors."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402

import butterfly_onnx  # noqa: E402
from butterfly_onnx.contract import PreprocessSpec  # noqa: E402
from butterfly_onnx.errors import ArchitectureError, DatasetError, TrainingError  # noqa: E402
from butterfly_onnx.sample_data import tuxpaint_available, tuxpaint_photo_dataset  # noqa: E402
from butterfly_onnx.train import FinetuneResult, FinetuneSettings, finetune, load_checkpoint  # noqa: E402
from butterfly_onnx.train.data import load_rgb  # noqa: E402

pytestmark = [pytest.mark.train, pytest.mark.slow]

SMALL = PreprocessSpec(resize_size=72, crop_size=64)  # keeps the synthetic runs cheap


def _colour_dataset(root: Path, per_class: int = 12) -> Path:
    """Three classes of noisy images whose mean colour differs: learnable in a few steps."""
    rng = np.random.default_rng(0)
    for label, colour in {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.normal(0, 40, (48, 48, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{i}.png")
    return root


def _tiny_run(data, out_dir, **overrides) -> FinetuneResult:
    kwargs = dict(
        model="mobilenet_v3_small",
        weights=None,
        epochs=2,
        head_epochs=1,
        batch_size=8,
        lr=1e-2,
        preprocess=SMALL,
        out_dir=out_dir,
        progress=False,
        patience=None,
        seed=0,
    )
    kwargs.update(overrides)
    return finetune(data, **kwargs)


# --- a real fine-tune on real photos ------------------------------------------------------------
@pytest.mark.skipif(not tuxpaint_available(), reason="tuxpaint-stamps-default is not installed")
def test_real_finetune_beats_chance_and_reports_everything(tmp_path):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    classes = ["flowers", "fruit", "mammals", "vegetables"]
    root = tuxpaint_photo_dataset(tmp_path / "photos", categories=classes, size=128, per_class=18)
    spec = PreprocessSpec(resize_size=128, crop_size=112, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    result = finetune(
        root,
        model="efficientnet_lite0",
        weights="DEFAULT",
        epochs=2,
        head_epochs=2,
        batch_size=16,
        lr=3e-3,
        val_fraction=0.25,
        preprocess=spec,
        out_dir=tmp_path / "run",
        progress=True,
        seed=0,
        precision="fp32",  # compared below with fp32 torchvision features (bf16: test_train_hardware.py)
    )
    assert result.labels == classes
    assert len(result.val_samples) == 4 * round(18 * 0.25)
    assert not {p for p, _ in result.val_samples} & {p for p, _ in result.train_samples}
    acc = result.metrics["val_acc1"]
    assert acc >= 0.7, result.metrics["history"]  # chance is 0.25
    assert result.metrics["val_acc5"] == 1.0  # 4 classes: top-5 holds every class
    assert set(result.metrics["per_class"]) == set(classes)
    assert sum(map(sum, result.metrics["confusion_matrix"])) == len(result.val_samples)

    # The reported accuracy is reproduced from the checkpoint alone, with torchvision's own eval
    # pipeline: validation ran in eval mode with the weights' eval transforms, no augmentation.
    from torchvision.transforms import v2

    raw = torch.load(result.checkpoint, weights_only=True)
    assert raw["config"]["metrics"]["val_acc1"] == pytest.approx(acc)
    model, config = load_checkpoint(result.checkpoint)
    assert PreprocessSpec.from_dict(config["preprocess"]) == spec == result.preprocess
    preset = v2.Compose(
        [
            v2.Resize(128, interpolation=v2.InterpolationMode.BILINEAR),
            v2.CenterCrop(112),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    batch = torch.stack([preset(load_rgb(p)) for p, _ in result.val_samples])
    with torch.no_grad():
        predicted = model(batch).argmax(1)
    targets = torch.tensor([label for _, label in result.val_samples])
    assert (predicted == targets).float().mean().item() == pytest.approx(acc)

    # Metrics log, plots, health report.
    history = json.loads(result.metrics_json.read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert result.metrics_csv.read_text().splitlines()[0].startswith("epoch,phase,train_loss")
    for png in result.plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.health["num_images"] == 72

    # The linear probe is scikit-learn's LogisticRegression on the frozen pretrained backbone's
    # features, computed here independently (torchvision's pipeline, the head cut off).
    from sklearn.linear_model import LogisticRegression

    backbone = butterfly_onnx.train.build_model("efficientnet_lite0", weights="DEFAULT").eval()
    backbone.classifier = torch.nn.Identity()

    def features(samples):
        with torch.no_grad():
            return backbone(torch.stack([preset(load_rgb(p)) for p, _ in samples])).double().numpy()

    train_y = np.array([label for _, label in result.train_samples])
    probe = LogisticRegression(max_iter=2000).fit(features(result.train_samples), train_y)
    probe_acc = float((probe.predict(features(result.val_samples)) == targets.numpy()).mean())
    assert result.metrics["probe_acc1"] == pytest.approx(probe_acc)
    # never worse than the probe (within one image)
    assert acc >= probe_acc - 1 / len(result.val_samples) - 1e-9
    assert result.metrics["features"]["loaded"] is False
    assert [h["cached"] for h in history] == [True, True]

    # A run whose epochs are worse than the probe (lr=0: the head stays random) keeps the
    # probe's head on the pretrained backbone; the feature cache of the first run is reused.
    fallback = finetune(
        root,
        model="efficientnet_lite0",
        weights="DEFAULT",
        epochs=1,
        head_epochs=1,
        batch_size=16,
        lr=0.0,
        val_fraction=0.25,
        preprocess=spec,
        out_dir=tmp_path / "run",
        resume=False,
        progress=False,
        seed=0,
        precision="fp32",
    )
    assert fallback.metrics["features"]["loaded"] is True
    assert fallback.metrics["history"][0]["val_acc1"] < probe_acc
    assert fallback.metrics["selected"] == "probe" and fallback.metrics["best_epoch"] == 0
    assert fallback.metrics["val_acc1"] == pytest.approx(probe_acc)
    model, _ = load_checkpoint(fallback.checkpoint)
    with torch.no_grad():
        predicted = model(batch).argmax(1).numpy()
    assert (predicted == probe.predict(features(result.val_samples))).all()


# --- resume ---------------------------------------------------------------------------------------
class _Interrupt:
    def __init__(self, after_epoch: int):
        self.after_epoch = after_epoch

    def __call__(self, epoch, row):
        if epoch == self.after_epoch:
            raise KeyboardInterrupt


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, capsys):
    data = _colour_dataset(tmp_path / "data")
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(data, tmp_path / "run", epochs=2, callbacks=[_Interrupt(after_epoch=1)])
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["config"]["epoch"] == 1 and [h["epoch"] for h in saved["history"]] == [1]
    assert saved["config"]["settings"]["epochs"] == 2

    # An existing run is neither resumed nor overwritten silently.
    with pytest.raises(TrainingError, match=r"pass resume=True \(--resume\) to continue it or resume=False"):
        _tiny_run(data, tmp_path / "run", epochs=2)
    resumed = _tiny_run(data, tmp_path / "run", epochs=2, resume=True)
    assert "resuming" in capsys.readouterr().err
    history = resumed.metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2] and resumed.epochs_run == 2
    assert history[:1] == saved["history"]  # the finished epoch is kept, not rerun
    assert [h["phase"] for h in history] == ["head", "finetune"]
    assert resumed.metrics["features"]["loaded"] is True  # the cache of the interrupted run

    straight = _tiny_run(data, tmp_path / "straight", epochs=2, test_data=data)
    assert [h["val_acc1"] for h in straight.metrics["history"]] == [h["val_acc1"] for h in history]
    a = torch.load(resumed.last_checkpoint, weights_only=True)["model_state"]
    b = torch.load(straight.last_checkpoint, weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded per epoch: bit-identical
    assert 0.0 <= straight.metrics["test"]["acc1"] <= 1.0 and "confusion_test" in straight.plots

    # Running again with everything finished trains nothing and reports the same best model.
    again = _tiny_run(data, tmp_path / "run", epochs=2, resume=True)
    assert again.metrics["history"] == history and again.metrics["val_acc1"] == resumed.metrics["val_acc1"]

    with pytest.raises(TrainingError, match="cannot resume"):
        _tiny_run(data, tmp_path / "run", model="resnet18", epochs=2, resume=True)
    with pytest.raises(TrainingError, match="cannot resume: it was trained with preprocessing"):
        _tiny_run(
            data, tmp_path / "run", epochs=2, preprocess=PreprocessSpec(resize_size=80, crop_size=64), resume=True
        )
    with pytest.raises(TrainingError, match=r"cannot resume with changed settings \(label_smoothing 0.1 -> 0.2"):
        _tiny_run(data, tmp_path / "run", epochs=2, label_smoothing=0.2, resume=True)

    # More epochs and a new learning rate are applied, and said so: the new epoch trains at
    # the new rate's schedule (never at a finished schedule's 0).
    longer = _tiny_run(data, tmp_path / "run", epochs=3, finetune_lr=0.05, resume=True)
    err = capsys.readouterr().err
    assert "after epoch 2 of 3" in err and "epochs 2 -> 3" in err and "finetune_lr None -> 0.05" in err
    third = longer.metrics["history"][2]
    assert third["epoch"] == 3 and third["phase"] == "finetune"
    assert 0 < third["lr_backbone"] <= 0.05 and third["lr_backbone_end"] > 0
    assert longer.metrics["history"][:2] == history

    # A fresh start ignores the checkpoint (and reuses the matching feature cache).
    fresh = _tiny_run(data, tmp_path / "run", epochs=2, resume=False)
    assert [h["val_acc1"] for h in fresh.metrics["history"]] == [h["val_acc1"] for h in straight.metrics["history"]]
    c = torch.load(fresh.last_checkpoint, weights_only=True)["model_state"]
    assert all(torch.equal(c[k], b[k]) for k in b)


def test_resume_inside_the_cached_head_phase_is_bit_identical(tmp_path):
    data = _colour_dataset(tmp_path / "data", per_class=6)
    run = dict(epochs=3, head_epochs=2, head_steps=20)
    with pytest.raises(KeyboardInterrupt):
        _tiny_run(data, tmp_path / "run", callbacks=[_Interrupt(after_epoch=1)], **run)
    cache = tmp_path / "run" / "features.pt"
    stamp = cache.stat().st_mtime_ns
    resumed = _tiny_run(data, tmp_path / "run", resume=True, **run)
    assert resumed.metrics["features"]["loaded"] is True and cache.stat().st_mtime_ns == stamp
    straight = _tiny_run(data, tmp_path / "straight", **run)
    rows = straight.metrics["history"]
    assert [h["phase"] for h in rows] == ["head", "head", "finetune"] and [h["cached"] for h in rows] == [
        True,
        True,
        False,
    ]
    # 15 training images, batches of 8: 2 steps per pass; head_steps=20 over 2 head epochs:
    # 5 passes (10 steps) per epoch
    assert [h["steps"] for h in rows[:2]] == [10, 10] and rows[0]["train_images"] == 5 * 15
    assert [h["val_acc1"] for h in resumed.metrics["history"]] == [h["val_acc1"] for h in rows]
    a = torch.load(resumed.last_checkpoint, weights_only=True)["model_state"]
    b = torch.load(straight.last_checkpoint, weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_and_phases(tmp_path):
    data = _colour_dataset(tmp_path / "data", per_class=6)
    result = _tiny_run(data, tmp_path / "run", epochs=6, head_epochs=2, lr=0.0, patience=1)
    # lr 0 never improves on the first epoch: stops after patience epochs without a better score.
    assert result.stopped_early and result.epochs_run == 2
    phases = [h["phase"] for h in result.metrics["history"]]
    assert phases == ["head", "head"]
    head_only = _tiny_run(data, tmp_path / "frozen", epochs=2, head_epochs=1, unfreeze="none")
    assert [h["phase"] for h in head_only.metrics["history"]] == ["head", "finetune"]
    trained = torch.load(head_only.last_checkpoint, weights_only=True)["model_state"]
    torch.manual_seed(0)  # finetune seeds before building the model: the same initial weights
    initial = butterfly_onnx.train.build_model("mobilenet_v3_small", num_classes=3).state_dict()
    head = {"classifier.3.weight", "classifier.3.bias"}
    # unfreeze="none": the backbone, BatchNorm running statistics included, never changed.
    assert all(torch.equal(trained[k], initial[k]) for k in initial if k not in head)
    assert not all(torch.equal(trained[k], initial[k]) for k in head)

    # freeze_norm_stats: the whole network trains, but every BatchNorm keeps its running statistics.
    frozen_stats = _tiny_run(data, tmp_path / "stats", epochs=2, head_epochs=1, freeze_norm_stats=True)
    trained = torch.load(frozen_stats.last_checkpoint, weights_only=True)["model_state"]
    stats = [k for k in initial if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(trained[k], initial[k]) for k in stats)
    assert not torch.equal(trained["features.0.0.weight"], initial["features.0.0.weight"])


# --- bad configuration ------------------------------------------------------------------------------
def test_one_epoch_clamps_the_head_epochs_with_a_note(tmp_path, capsys):
    data = _colour_dataset(tmp_path / "data", per_class=4)
    result = _tiny_run(data, tmp_path / "run", epochs=1, head_epochs=2)
    assert "head_epochs=2 clamped to epochs=1" in capsys.readouterr().err
    assert [h["phase"] for h in result.metrics["history"]] == ["head"]
    assert result.settings.head_epochs == 1 and result.metrics["notes"] == ["head_epochs=2 clamped to epochs=1"]


def test_settings_object_validated_frozen_and_saved(tmp_path):
    settings = FinetuneSettings(epochs=3, lr=0.01, preprocess=SMALL.to_dict())
    assert settings.preprocess == SMALL and settings.backbone_lr == pytest.approx(0.001)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 0.1
    assert FinetuneSettings(**{k: v for k, v in settings.to_dict().items()}) == settings
    for bad, match in [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lr": -1}, "lr must be >= 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"warmup": 2}, "warmup must be <= 1"),
        ({"class_balance": "sampler"}, "class_balance must be one of"),
        ({"val_fraction": 0}, "val_fraction must be > 0"),
        ({"lr": float("nan")}, "finite"),
    ]:
        with pytest.raises(TrainingError, match=match):
            FinetuneSettings(**bad)
    applied, refused = settings.resume_changes(settings.replace(epochs=5, seed=3).to_dict())
    assert applied == {"epochs": (5, 3)} and refused == {"seed": (3, 0)}

    data = _colour_dataset(tmp_path / "data", per_class=4)
    result = _tiny_run(data, tmp_path / "run", epochs=1, class_balance="loss")
    raw = torch.load(result.checkpoint, weights_only=True)
    assert raw["config"]["settings"] == result.settings.to_dict()
    assert raw["config"]["settings"]["class_balance"] == "loss"


def test_bad_configuration_errors(tmp_path):
    data = _colour_dataset(tmp_path / "data", per_class=3)
    with pytest.raises(ArchitectureError, match="unknown architecture 'efficientnet_lite9'"):
        finetune(data, model="efficientnet_lite9", out_dir=tmp_path / "x", progress=False)
    with pytest.raises(TrainingError, match="head_epochs must be >= 0"):
        finetune(data, epochs=1, head_epochs=-1, out_dir=tmp_path / "x", progress=False)
    with pytest.raises(TrainingError, match="unfreeze"):
        finetune(data, unfreeze="half", out_dir=tmp_path / "x", progress=False)
    with pytest.raises(TrainingError, match="resume must be None, True or False"):
        finetune(data, resume="yes", out_dir=tmp_path / "x", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        _tiny_run(tmp_path / "empty", tmp_path / "x")


# --- DDP with two CPU processes ----------------------------------------------------------------
DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, torch
    from butterfly_onnx.contract import PreprocessSpec
    from butterfly_onnx.train import finetune
    torch.set_num_threads(1)
    data, out = sys.argv[1], sys.argv[2]
    result = finetune(data, model="mobilenet_v3_small", weights=None, epochs=2, head_epochs=1, batch_size=4,
                      lr=1e-2, preprocess=PreprocessSpec(resize_size=72, crop_size=64), out_dir=out,
                      progress=False, patience=None, max_steps_per_epoch=2, dist_timeout_s=60)
    rank = int(os.environ.get("RANK", "-1"))
    # one file per rank: the two processes share one stdout pipe, where lines can interleave
    with open(os.path.join(out, f"result_rank{rank}.json"), "w") as handle:
        json.dump({"rank": rank, "acc": result.metrics["val_acc1"], "n": len(result.val_samples)}, handle)
    """
)


def _torchrun(tmp_path, data, out, timeout=240):
    script = tmp_path / "ddp_finetune.py"
    script.write_text(DDP_SCRIPT)
    package_root = str(Path(butterfly_onnx.__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": package_root + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(data),
        str(out),
    ]
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # our own process group only
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not finish within {timeout}s:\n{output[-3000:]}")
    return process.returncode, output


def test_ddp_two_cpu_processes(tmp_path):
    data = _colour_dataset(tmp_path / "data", per_class=8)
    code, output = _torchrun(tmp_path, data, tmp_path / "run")
    assert code == 0, output[-3000:]
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "run").glob("result_rank*.json"))]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert results[0]["acc"] == results[1]["acc"]  # validation gathered from both shards
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["config"]["train_config"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in saved["model_state"])
    # The head epoch ran on the gathered feature cache (the same on both ranks: 18 training
    # images, batches of 4, at least 300 steps in whole passes); then both ranks trained: each
    # step covers batch_size images per rank.
    head_row, full_row = saved["history"]
    assert head_row["cached"] and head_row["steps"] == 300 and head_row["train_images"] == 60 * 18
    assert full_row["train_images"] == 2 * 2 * 4 and not full_row["cached"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.suffix == ".pt") == [
        "best.pt",
        "features.pt",
        "last.pt",
    ]
    load_checkpoint(tmp_path / "run" / "best.pt")


def test_ddp_failure_terminates(tmp_path):
    (tmp_path / "empty").mkdir()
    code, output = _torchrun(tmp_path, tmp_path / "empty", tmp_path / "run", timeout=180)
    assert code != 0
    assert "DatasetError" in output
