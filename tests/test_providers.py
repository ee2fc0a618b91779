"""Execution providers (butterfly_onnx._backends.providers, the Rust core's classifier::providers)
and the threads a backend really uses.

The references: onnxruntime itself (``get_available_providers()``, ``get_providers()``), the
CPU provider's logits, and a second onnxruntime wheel, ``onnxruntime-openvino``, in a venv the
test setup makes (tests/provider_envs.py): the OpenVINO provider runs there for real, on both
backends and the Rust CLI.  GPU tests (marker ``gpu``) run only where onnxruntime has the CUDA
provider (scripts/gpu_checks.sh); there is no GPU on this project's machines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from butterfly_onnx import Classifier
from butterfly_onnx._backends import available_cpus
from butterfly_onnx._backends.providers import PROVIDERS, resolve_providers
from butterfly_onnx.cli import main
from butterfly_onnx.errors import BackendUnavailableError, InvalidArgumentError, InvalidArgumentTypeError
from contract_models import require_backend
from provider_envs import make_openvino_env

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "butterfly-onnx: error:"
#: Providers the CPU-only onnxruntime wheel of CI lacks, asked for by name and by device.
NOT_HERE = [
    ("CUDAExecutionProvider", "cuda"),
    ("TensorrtExecutionProvider", "tensorrt:0"),
    ("CoreMLExecutionProvider", "coreml"),
]


@pytest.fixture(scope="module")
def photos(corpus):
    return [str(corpus[name]) for name in sorted(corpus) if name.startswith(("skimage_", "sklearn_"))]


def _unavailable(name: str) -> str:
    """The one message both backends give, built from onnxruntime's own list (the reference)."""
    return (
        f"execution provider {name} is not in the loaded ONNX Runtime, which has "
        f"{', '.join(ort.get_available_providers())}; to get it: {PROVIDERS[name]['install']}"
    )


def _rust_cli() -> Path | None:
    candidate = Path(os.environ.get("BUTTERFLY_ONNX_RUST_CLI", ROOT / "target/release/butterfly-onnx"))
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _run_rust_cli(*args: str, library: str | None = None) -> subprocess.CompletedProcess:
    from butterfly_onnx._backends.rust import find_onnxruntime_library

    cli = _rust_cli()
    if cli is None:
        pytest.skip("the Rust CLI is not built (target/release/butterfly-onnx)")
    env = {**os.environ, "ORT_DYLIB_PATH": library or str(find_onnxruntime_library())}
    env.pop("BUTTERFLY_ONNX_ORT_LIB", None)
    return subprocess.run([str(cli), *args], capture_output=True, text=True, env=env, timeout=300)


# --- the rule --------------------------------------------------------------------------------------
def test_device_shorthand_and_provider_lists():
    assert resolve_providers() == (("CPUExecutionProvider", {}),)
    assert resolve_providers(device="cuda:1") == (("CUDAExecutionProvider", {"device_id": "1"}),)
    assert resolve_providers(device="tensorrt") == (("TensorrtExecutionProvider", {}), ("CUDAExecutionProvider", {}))
    assert resolve_providers(device="OpenVINO:GPU") == (("OpenVINOExecutionProvider", {"device_type": "GPU"}),)
    # As onnxruntime takes them: names and (name, options) pairs, option values as strings.
    assert resolve_providers([("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]) == (
        ("CUDAExecutionProvider", {"device_id": "0"}),
        ("CPUExecutionProvider", {}),
    )
    for kwargs, needle in (
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"device": "cuda:x"}, "must be a number"),
        ({"device": "cpu:0"}, "unknown device"),
        ({"providers": ["CudaProvider"]}, "unknown execution provider 'CudaProvider'"),
        ({"providers": [("CPUExecutionProvider", {"use_tf32": 0})]}, "takes no option 'use_tf32'"),
        ({"providers": ["CPUExecutionProvider", "CPUExecutionProvider"]}, "given twice"),
        ({"providers": []}, "empty"),
        ({"providers": ["CPUExecutionProvider"], "device": "cpu"}, "not both"),
    ):
        with pytest.raises(InvalidArgumentError, match=needle):
            resolve_providers(**kwargs)
    with pytest.raises(InvalidArgumentTypeError):
        resolve_providers([42])


def test_the_cpu_provider_by_default_and_by_name(backend, contract_model, photos):
    default = Classifier(contract_model.path, backend=backend, threads=1)
    named = Classifier(contract_model.path, backend=backend, threads=1, device="cpu")
    assert default.providers == named.providers == ("CPUExecutionProvider",)
    assert "providers=CPUExecutionProvider" in repr(default)
    assert np.array_equal(default.logits(photos[:2]), named.logits(photos[:2]))


@pytest.mark.parametrize("name, device", NOT_HERE, ids=[n for n, _ in NOT_HERE])
def test_a_provider_this_runtime_lacks_is_refused_with_what_provides_it(backend, contract_model, name, device):
    if name in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {name}")
    for kwargs in ({"providers": [name]}, {"device": device}):
        with pytest.raises(BackendUnavailableError) as caught:
            Classifier(contract_model.path, backend=backend, threads=1, **kwargs)
        assert str(caught.value) == _unavailable(name)


@pytest.mark.parametrize("name, device", NOT_HERE, ids=[n for n, _ in NOT_HERE])
def test_serve_refuses_it_before_listening(contract_model, name, device):
    from butterfly_onnx import serve

    if name in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {name}")
    require_backend("rust")
    for kwargs in ({"providers": [name]}, {"device": device}):
        with pytest.raises(BackendUnavailableError) as caught:
            serve(contract_model.path, port=0, **kwargs)
        assert str(caught.value) == _unavailable(name)


@pytest.mark.parametrize("name, device", NOT_HERE, ids=[n for n, _ in NOT_HERE])
def test_both_clis_refuse_it_in_one_line_with_exit_status_2(name, device, contract_model, photos, capsys):
    if name in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {name}")
    require_backend("rust")
    model = str(contract_model.path)
    lines = []
    for args in (
        ["predict", model, photos[0], "--device", device],
        ["predict", model, photos[0], "--provider", name, "--backend", "python"],
        ["info", model, "--device", device],
        ["serve", model, "--port", "0", "--device", device],  # refused before it listens
    ):
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.splitlines() == [f"{PREFIX} {_unavailable(name)}"], err
        done = _run_rust_cli(*[a for a in args if a not in ("--backend", "python")])
        assert (done.returncode, done.stdout, done.stderr.splitlines()) == (2, "", [f"{PREFIX} {_unavailable(name)}"])
        lines.append(err)
    assert len(set(lines)) == 1


def test_cli_usage_errors_name_the_device(contract_model, photos, capsys):
    model = str(contract_model.path)
    for args, needle in (
        (["--device", "gpu"], "unknown device 'gpu'"),
        (["--provider", "CUDAExecutionProvider:device_id"], "KEY=VALUE"),
    ):
        assert main(["predict", model, photos[0], *args]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and needle in err
        done = _run_rust_cli("predict", model, photos[0], *args)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and needle in done.stderr
    assert main(["predict", model, photos[0], "--device", "cpu", "--provider", "CPUExecutionProvider"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_what_runs_is_visible(contract_model, photos, tmp_path, capsys):
    """info (both CLIs), val --json and the verification of export name the providers."""
    require_backend("rust")
    done = _run_rust_cli("info", str(contract_model.path), "--json", "--device", "cpu")
    assert done.returncode == 0 and json.loads(done.stdout)["providers"] == ["CPUExecutionProvider"]
    assert "providers:      CPUExecutionProvider" in _run_rust_cli("info", str(contract_model.path)).stdout
    assert main(["info", str(contract_model.path), "--device", "cpu"]) == 0
    assert "providers=CPUExecutionProvider" in capsys.readouterr().out
    data = tmp_path / "data" / "species_03"
    data.mkdir(parents=True)
    for photo in photos[:2]:
        (data / Path(photo).name).write_bytes(Path(photo).read_bytes())
    assert main(["val", str(contract_model.path), str(tmp_path / "data"), "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["providers"] == ["CPUExecutionProvider"] and report["count"] == 2


def test_export_verification_runs_on_the_providers_asked_for(contract_model, photos):
    from butterfly_onnx.export import verify_onnx

    report = verify_onnx(contract_model.path, contract_model.module, photos[:2], device="cpu")
    assert report.top1_agreement == 1.0
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider is not in the loaded"):
            verify_onnx(contract_model.path, contract_model.module, photos[:2], device="cuda")


def test_export_verifies_on_the_providers_asked_for_and_refuses_a_missing_one(contract_model, photos, tmp_path):
    from butterfly_onnx import export_onnx
    from butterfly_onnx.export import ExportReport
    from contract_models import LABELS

    spec = contract_model.contract.preprocess
    path = export_onnx(
        contract_model.module,
        tmp_path / "cpu.onnx",
        labels=list(LABELS),
        preprocess=spec,
        verify_images=photos[:2],
        device="cpu",
    )
    assert ExportReport.load(path).verification.top1_agreement == 1.0
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return
    target = tmp_path / "cuda.onnx"
    with pytest.raises(BackendUnavailableError) as caught:
        export_onnx(
            contract_model.module, target, labels=list(LABELS), preprocess=spec, verify_images=photos[:2], device="cuda"
        )
    assert str(caught.value) == _unavailable("CUDAExecutionProvider")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu.export.json", "cpu.onnx"]  # nothing of cuda.onnx


# --- threads ---------------------------------------------------------------------------------------
def test_threads_default_to_the_cpus_this_process_may_use(backend, contract_model):
    clf = Classifier(contract_model.path, backend=backend)
    assert clf.threads == available_cpus() <= (os.cpu_count() or 1)
    if backend == "rust":  # Rust's std::thread::available_parallelism (affinity and cgroup quota)
        from butterfly_onnx._backends.rust import _native, find_onnxruntime_library

        native = _native().Classifier(str(contract_model.path), ort_library=str(find_onnxruntime_library()))
        assert native.threads == available_cpus()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_threads_follow_the_cpu_affinity(contract_model):
    """Pinned to one CPU, both backends use one thread (os.cpu_count() would say otherwise)."""
    require_backend("rust")
    script = (
        "import os, sys; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from butterfly_onnx import Classifier\n"
        "print([Classifier(sys.argv[1], backend=b).threads for b in ('python', 'rust')], os.cpu_count())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(contract_model.path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("]")[0] == "[1, 1"


# --- OpenVINO, for real, in the venv the setup makes ------------------------------------------------
_OPENVINO_SCRIPT = r"""
import json, sys
import numpy as np
from butterfly_onnx import Classifier
from butterfly_onnx.errors import BackendUnavailableError
from butterfly_onnx._backends.rust import find_onnxruntime_library
import onnxruntime

model, photos = sys.argv[1], sys.argv[2:]
out = {"available": onnxruntime.get_available_providers(), "library": str(find_onnxruntime_library())}
for backend in ("python", "rust"):
    for device in ("cpu", "openvino"):
        clf = Classifier(model, backend=backend, threads=2, device=device)
        out[f"{backend}/{device}"] = {"providers": list(clf.providers), "logits": clf.logits(photos).tolist()}
    try:
        Classifier(model, backend=backend, threads=1, device="openvino:GPU")
        out[f"{backend}/gpu"] = "opened"
    except BackendUnavailableError as exc:
        out[f"{backend}/gpu"] = str(exc)
from butterfly_onnx.bench import run_bench
from butterfly_onnx.parity import run_parity

parity = run_parity(model, photos[:2], device="openvino")
out["parity"] = {"logits": parity.max_diff["logits"], "top1": parity.top1_agreement, "providers": parity.providers}
# The handwritten loop (ONNX Runtime's CPU provider) is the reference of the other rows.
bench = run_bench(model, photos[:2], contenders=("handwritten", "python", "rust"), rounds=1, device="openvino")
out["bench"] = [[r.contender, r.providers, r.top1_agreement, r.max_logit_diff] for r in bench.rows]
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def openvino_python() -> Path:
    try:
        return make_openvino_env()
    except (subprocess.CalledProcessError, OSError) as exc:
        if os.environ.get("BUTTERFLY_ONNX_REQUIRE_OPENVINO"):
            raise
        pytest.skip(f"cannot make the onnxruntime-openvino venv (no PyPI?): {exc}")


@pytest.fixture(scope="module")
def openvino_run(openvino_python, contract_model, photos) -> dict:
    require_backend("rust")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    for name in ("BUTTERFLY_ONNX_ORT_LIB", "ORT_DYLIB_PATH"):
        env.pop(name, None)
    done = subprocess.run(
        [str(openvino_python), "-c", _OPENVINO_SCRIPT, str(contract_model.path), *photos],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_openvino_predicts_like_the_cpu_provider_on_both_backends(openvino_run, photos):
    assert "OpenVINOExecutionProvider" in openvino_run["available"]
    assert "openvino" in openvino_run["library"]  # the rust backend loaded that wheel's library
    cpu = np.asarray(openvino_run["python/cpu"]["logits"])
    assert cpu.shape == (len(photos), 10)
    for backend in ("python", "rust"):
        assert openvino_run[f"{backend}/cpu"]["providers"] == ["CPUExecutionProvider"]
        assert openvino_run[f"{backend}/openvino"]["providers"] == ["OpenVINOExecutionProvider", "CPUExecutionProvider"]
        got = np.asarray(openvino_run[f"{backend}/openvino"]["logits"])
        assert np.array_equal(got.argmax(1), cpu.argmax(1))
        assert np.abs(got - cpu).max() <= 1e-3
    # The two backends feed OpenVINO the same tensors (preprocessing stays on the CPU, exact).
    assert np.array_equal(np.asarray(openvino_run["rust/cpu"]["logits"]), cpu)


def test_parity_and_bench_report_the_providers_difference(openvino_run):
    """parity and bench on OpenVINO: the logit difference from the CPU provider and the top-1
    agreement, per backend, with the providers named."""
    parity = openvino_run["parity"]
    for backend in ("python", "rust"):
        assert parity["providers"][backend] == ["OpenVINOExecutionProvider", "CPUExecutionProvider"]
        assert 0.0 < parity["logits"][backend] <= 1e-3  # OpenVINO's kernels are not the CPU provider's
        assert parity["top1"][backend] == 1.0
    rows = {row[0]: row[1:] for row in openvino_run["bench"]}
    assert rows["handwritten"] == ["CPUExecutionProvider", None, None]
    for backend in ("python", "rust"):
        providers, top1, diff = rows[backend]
        assert providers == "OpenVINOExecutionProvider+CPUExecutionProvider" and top1 == 1.0 and diff <= 1e-3


def test_an_openvino_device_that_is_absent_is_refused_not_dropped(openvino_run):
    """device_type GPU on a machine without one: onnxruntime's python API drops the provider
    and runs on the CPU; both backends refuse, naming it."""
    for backend in ("python", "rust"):
        message = openvino_run[f"{backend}/gpu"]
        assert message.startswith("execution provider OpenVINOExecutionProvider failed to initialise: "), message
        assert message.endswith("to get it: pip install onnxruntime-openvino")


def test_the_rust_cli_runs_openvino_from_that_wheel(openvino_run, contract_model, photos):
    args = ("predict", str(contract_model.path), *photos[:3], "--json", "--no-progress")
    on_cpu = _run_rust_cli(*args, library=openvino_run["library"])
    on_openvino = _run_rust_cli(*args, "--device", "openvino", library=openvino_run["library"])
    assert on_cpu.returncode == on_openvino.returncode == 0, on_openvino.stderr
    labels = [[json.loads(line)["label"] for line in run.stdout.splitlines()] for run in (on_cpu, on_openvino)]
    assert labels[0] == labels[1] and len(labels[0]) == 3
    info = _run_rust_cli("info", str(contract_model.path), "--device", "openvino", library=openvino_run["library"])
    assert "providers:      OpenVINOExecutionProvider+CPUExecutionProvider" in info.stdout


# --- GPU (scripts/gpu_checks.sh; skipped without the CUDA provider) ----------------------------------
def _require(name: str) -> None:
    if name not in ort.get_available_providers():
        why = f"onnxruntime has no {name} here (no GPU on this machine)"
        if os.environ.get("BUTTERFLY_ONNX_REQUIRE_GPU"):  # scripts/gpu_checks.sh: a skip is a failure
            pytest.fail(why)
        pytest.skip(why)


@pytest.mark.gpu
@pytest.mark.parametrize("device, tolerance", [("cuda", 1e-2), ("tensorrt", 1e-2)])
def test_gpu_providers_agree_with_the_cpu_on_both_backends(backend, device, tolerance, contract_model, photos):
    _require(resolve_providers(device=device)[0][0])
    cpu = Classifier(contract_model.path, backend=backend, threads=2).logits(photos)
    try:
        clf = Classifier(contract_model.path, backend=backend, threads=2, device=device)
    except BackendUnavailableError as exc:
        if device != "tensorrt" or "failed to initialise" not in str(exc):
            raise
        pytest.skip(f"TensorRT's libraries are not installed: {exc}")  # optional in onnxruntime-gpu
    assert clf.providers[0] == resolve_providers(device=device)[0][0]
    got = clf.logits(photos)
    assert np.array_equal(got.argmax(1), cpu.argmax(1))
    assert np.abs(got - cpu).max() <= tolerance  # TF32 / fused kernels (docs/inference.md)


@pytest.mark.gpu
def test_the_fp16_variant_runs_on_cuda(backend, contract_model, photos, tmp_path):
    """fp16 belongs on the GPU (on CPUs ONNX Runtime inserts casts): same top-1 as fp32 on the CPU."""
    _require("CUDAExecutionProvider")
    from butterfly_onnx.export.variants import build_variant

    fp16 = tmp_path / "model.fp16.onnx"
    build_variant("fp16", contract_model.path, fp16, spec=contract_model.contract.preprocess)
    cpu = Classifier(contract_model.path, backend=backend, threads=2).logits(photos)
    contract = contract_model.contract
    got = Classifier(
        fp16, backend=backend, threads=2, device="cuda", labels=contract.labels, preprocess=contract.preprocess
    ).logits(photos)
    assert np.array_equal(got.argmax(1), cpu.argmax(1))
    assert np.abs(got - cpu).max() <= 5e-2


def test_predict_dataset_checks_the_providers_before_any_actor(contract_model, photos):
    pytest.importorskip("ray")
    from butterfly_onnx.ray import predict_dataset

    with pytest.raises(InvalidArgumentError, match="unknown device 'gpu'"):
        predict_dataset(photos[:1], contract_model.path, device="gpu")
    with pytest.raises(InvalidArgumentError, match="not both"):
        predict_dataset(photos[:1], contract_model.path, device="cpu", providers=["CPUExecutionProvider"])
