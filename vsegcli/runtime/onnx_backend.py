"""Execution backends for a model's per-frame part: torch (default) or ONNX Runtime (CPU).

Why (docs/PERFORMANCE.md section 8): on the shared 2-core machine, interleaved, the shipped
effl0's per-frame part at 288x640 ran 2.0x faster in ONNX Runtime fp32 than in torch eager, on
the same graph with the same labels; the torch-side fixes measured (channels-last 1.1-1.4x,
jit.freeze + optimize_for_inference 1.3-1.6x, CPU bf16 slower) did not close the gap. ORT's
sessions also do not spin-wait (`session_options`), so they hold up under load where torch's
OpenMP workers collapse.

What runs where: only the per-frame part is exported, so streaming semantics stay in torch and
every Session works unchanged:

    per-frame model (effl0, segformer-*, ...)  forward_frame          -> ORT
    STT families                              features (backbone+decoder fuse) -> ORT; STT + head torch
    MRCFA families                            encode (backbone + fuse, c2/c3/c4) -> ORT; affinities torch

`OrtBackend.model` is a shallow copy of the torch model whose per-frame method is the ORT call;
the copy shares every other module (STT, MRCFA head) with the original.

Graphs are exported once per checkpoint and input size (torch.onnx.export, opset 17, batch
dynamic) and cached in $VSEG_CACHE_DIR/onnx (default ~/.cache/vseg/onnx) under a key of the weights'
hash, the architecture, the part, the input size, the precision and the torch/ORT versions; written atomically.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from vsegcli import __version__
from vsegcli.errors import VsegError
from vsegcli.io.fsutil import atomic_path
from vsegcli.models.base import Segmentor

RUNTIMES = ("torch", "onnxruntime", "auto")
OPSET = 17
# Nodes kept in fp32 by the int8 recipe (regexes over the exported node names, which follow the
# module path: /backbone/_conv_stem/Conv, /lateral.0/conv/Conv, /cls/Conv). The stem sees raw
# normalised pixels; everything after the backbone (decoder, classifier) decides the argmax margins.
# Whether the depthwise convolutions may be int8 too depends on the weights, not the architecture
# (benchmarks/int8_sensitivity.py ranks layers on held-out TRAIN frames; CamVid val then judges,
# docs/PERFORMANCE.md 8.2b): the retrained effl0 / stt-effl0 ([-1, 1] inputs) lose 0.11 / 0.04 mIoU
# with them int8 and run 1.50x ORT fp32's speed, where keeping them fp32 gave 1.0x (its
# quantise/dequantise pairs cost what the int8 1x1 convs save); ImageNet-normalised weights
# (mrcfa-effl0, the earlier effl0) lost 0.50-0.57. So the fast recipe is used only where a ranges
# file measured for those very weights names it; calibrating on frames uses the conservative one.
INT8_STEM_AND_HEAD = (r"^/backbone/_conv_stem/", r"^/(?!backbone/)")
INT8_CONSERVATIVE = (*INT8_STEM_AND_HEAD, r"_depthwise_conv/")
INT8_RECIPES: dict[str, tuple[str, ...]] = {"conservative": INT8_CONSERVATIVE, "stem-and-head": INT8_STEM_AND_HEAD}
CALIBRATION_ENV = "VSEG_CALIBRATION_FRAMES"


def ort_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_has_bf16() -> bool:
    """Native bf16 dot products on this CPU (AVX512-BF16 or AMX), as oneDNN sees it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def exported_part(model: Segmentor) -> str | None:
    """Which method of `model` runs per frame and can be exported: "frame", "features", "encode" or
    None. Asked of the model (`Segmentor.per_frame_part`), never decided by its class here."""
    part = getattr(model, "per_frame_part", None)
    if part is not None:
        return part
    return None if getattr(model, "temporal", False) else "frame"


class FramePart(nn.Module):
    """The exported method as a module (torch.onnx.export traces `forward`)."""

    def __init__(self, model: Segmentor, part: str) -> None:
        super().__init__()
        self.model = model
        self.part = part

    def forward(self, x: torch.Tensor) -> Any:
        if self.part == "frame":
            return self.model.forward_frame(x)
        if self.part == "features":
            return self.model.features(x)
        return tuple(self.model.encode(x))


def cache_dir() -> Path:
    env = os.environ.get("VSEG_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vseg"
    return base / "onnx"


def weights_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, shapes, bytes): the cache key's identity."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        # reshape(-1): a 0-dim buffer (BatchNorm's num_batches_tracked) cannot be viewed as bytes.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def cache_key(model: Segmentor, part: str, precision: str, extra: str = "", weights: str | None = None) -> str:
    """The cached graph's file stem; `weights`: `weights_hash(model)` when the caller has it."""
    import onnxruntime as ort

    fields = dict(arch=model.arch_name or type(model).__name__, options=model.arch_options, part=part,
                  precision=precision, weights=weights or weights_hash(model), opset=OPSET, torch=torch.__version__,
                  ort=ort.__version__, vseg=__version__, extra=extra)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]
    arch = re.sub(r"[^A-Za-z0-9_.-]", "_", str(fields["arch"]))
    return f"{arch}-{part}-{precision}-{digest}"


def export_onnx(model: Segmentor, part: str, path: Path, size: tuple[int, int]) -> Path:
    """torch.onnx.export of `part` at input size (h, w) (opset 17, batch dynamic), atomically to `path`."""
    import onnx

    wrapper = FramePart(model, part).eval()
    x = torch.zeros(1, 3, *size)
    with torch.no_grad():
        outs = wrapper(x)
    n_out = len(outs) if isinstance(outs, tuple) else 1
    out_names = [f"out{i}" for i in range(n_out)]
    axes = {name: {0: "batch"} for name in ["images", *out_names]}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The tracer warns that padding/resize sizes become constants: intended, the graph is per size.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(wrapper, (x,), str(tmp), input_names=["images"], output_names=out_names,
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
        onnx.checker.check_model(str(tmp))
    return path


def int8_nodes_to_exclude(onnx_path: Path, keep_fp32: Sequence[str]) -> list[str]:
    """Names of the nodes matching one of the regexes `keep_fp32` (the legacy exporter names nodes
    after their module path, e.g. /backbone/_conv_stem/Conv)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    return [n.name for n in graph.node if any(re.search(p, n.name) for p in keep_fp32)]


class _Calibration:
    """ORT CalibrationDataReader over a list of prepared (1, 3, h, w) float32 arrays."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self._it = iter(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        a = next(self._it, None)
        return None if a is None else {"images": a}


def quantize_int8(fp32_path: Path, out_path: Path, calibration: list[np.ndarray] | Mapping[str, Sequence[float]],
                  keep_fp32: Sequence[str] = INT8_CONSERVATIVE) -> Path:
    """Static QDQ int8: per-channel weights, uint8 activations; nodes named under `keep_fp32` stay
    fp32. `calibration`: prepared frames (MinMax or percentile ranges measured on them), or
    activation ranges measured before (`calibrate_ranges`, e.g. shipped beside a checkpoint):
    then ORT calibrates on one blank frame and every range is overridden, which gives the very
    graph the frames would (tests/test_runtime_backends.py)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with atomic_path(out_path) as tmp:
        pre = Path(str(tmp) + ".pre.onnx")
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            arrays, extra = calibration, {}
            if isinstance(calibration, Mapping):
                arrays = [_blank_input(pre)]
                needed = set(calibrate_ranges(pre, arrays))
                missing = sorted(needed - set(calibration))
                if missing:
                    raise VsegError(f"the int8 ranges lack {len(missing)} activations of this graph (e.g. "
                                    f"{missing[0]}; exported by another torch version?): calibrate on frames "
                                    f"instead, {CALIBRATION_ENV}=FOLDER of training images")
                # only this graph's activations: ORT refuses an override of a tensor it lacks
                extra = {"TensorQuantOverrides": {k: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
                                                  for k, (lo, hi) in calibration.items() if k in needed}}
            quantize_static(str(pre), str(tmp), _Calibration(list(arrays)), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=int8_nodes_to_exclude(pre, keep_fp32), extra_options=extra)
        finally:
            pre.unlink(missing_ok=True)
            Path(str(pre) + ".data").unlink(missing_ok=True)
    return out_path


def _blank_input(onnx_path: Path) -> np.ndarray:
    import onnx

    dims = onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim
    return np.zeros([d.dim_value or 1 for d in dims], np.float32)


def calibrate_ranges(onnx_path: Path, arrays: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    """MinMax range of every activation int8 would quantise, over the prepared frames."""
    import tempfile

    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory(prefix="vseg-calib-") as tmp:
        calibrator = create_calibrator(Path(onnx_path), None, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(_Calibration(arrays))
        data = calibrator.compute_data().data
    return {k: (float(np.asarray(v.range_value[0]).item()), float(np.asarray(v.range_value[1]).item()))
            for k, v in data.items()}


# Activation ranges shipped beside a checkpoint (X.safetensors -> X.int8-ranges.json), measured by
# benchmarks/write_int8_ranges.py on its training frames: `--precision int8` then needs no
# calibration folder. The file names the weights it was measured on and its recipe.
RANGES_SUFFIX = ".int8-ranges.json"
RANGES_FORMAT = "vseg-int8-ranges/2"  # /2: recipe and weights hash required


def ranges_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's int8 ranges file lives (whether or not it exists)."""
    path = Path(checkpoint)
    return path.with_name(path.name.removesuffix(path.suffix) + RANGES_SUFFIX)


def ranges_beside(checkpoint: str | Path | None) -> Path | None:
    """The int8 ranges file shipped beside `checkpoint`, if there is one."""
    if checkpoint is None:
        return None
    path = ranges_path(checkpoint)
    return path if path.is_file() else None


@dataclass
class Int8Ranges:
    """A ranges file: per-activation (min, max), the fp32-kept node patterns, and the
    `weights_hash` of the (BatchNorm-folded) model they were measured on. `size` (the input size
    they were measured at) is informational: activation ranges barely depend on it. `digest`: of
    the file's bytes as read (the int8 graph's cache key)."""

    ranges: dict[str, tuple[float, float]]
    recipe: tuple[str, ...]
    weights: str
    architecture: str
    size: tuple[int, int]
    digest: str = ""

    def save(self, path: Path, frames_note: str) -> Path:
        doc = {"format": RANGES_FORMAT, "architecture": self.architecture, "weights": self.weights,
               "recipe": list(self.recipe), "method": "minmax", "size": list(self.size), "frames": frames_note,
               "torch": torch.__version__, "ranges": {k: list(v) for k, v in self.ranges.items()}}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> "Int8Ranges":
        import math

        try:
            raw = Path(path).read_bytes()
            doc = json.loads(raw)
            if isinstance(doc, dict) and str(doc.get("format", "")).startswith("vseg-int8-ranges/") \
                    and doc["format"] != RANGES_FORMAT:
                raise ValueError(f"{doc['format']} was written by another vseg; remake it with "
                                 "benchmarks/write_int8_ranges.py")
            if not isinstance(doc, dict) or doc.get("format") != RANGES_FORMAT:
                raise ValueError(f"expected a JSON object of format {RANGES_FORMAT}")
            ranges = {str(k): (float(lo), float(hi)) for k, (lo, hi) in dict(doc["ranges"]).items()}
            bad = next((k for k, (lo, hi) in ranges.items()
                        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi)), None)
            if bad is not None or not ranges:
                raise ValueError(f"range of {bad} is not finite with min <= max" if bad else "no ranges")
            if not isinstance(doc["recipe"], list) or not all(isinstance(r, str) for r in doc["recipe"]):
                raise ValueError("recipe must be a list of node-name patterns")
            recipe = tuple(doc["recipe"])
            for r in recipe:
                re.compile(r)
            return cls(ranges, recipe, str(doc["weights"]), str(doc["architecture"]),
                       (int(doc["size"][0]), int(doc["size"][1])), hashlib.sha256(raw).hexdigest()[:16])
        except (OSError, ValueError, KeyError, TypeError, IndexError, re.error) as exc:
            raise VsegError(f"{path}: not a usable vseg int8 ranges file ({exc})") from None


def calibration_source(source: str | Path | None, default: Path | None = None) -> Path:
    """Where int8 takes its activation ranges from: `source`, else $VSEG_CALIBRATION_FRAMES, else
    `default` (the ranges file shipped beside a checkpoint) — a folder of training frames or an
    int8 ranges file (RANGES_SUFFIX)."""
    source = source or os.environ.get(CALIBRATION_ENV) or default
    if not source:
        raise VsegError(f"int8 is calibrated once per checkpoint on training frames: set {CALIBRATION_ENV} "
                        "to a folder of training images (e.g. camvid/train); the shipped models need none "
                        "(their ranges ship beside them)")
    path = Path(source)
    if not path.exists():
        raise VsegError(f"{path}: no such file or folder to calibrate int8 with")
    if path.is_file():
        if not path.name.endswith(RANGES_SUFFIX):
            raise VsegError(f"{path}: int8 calibrates on a folder of training frames or a ranges file named "
                            f"*{RANGES_SUFFIX}")
    return path


def calibration_images(source: str | Path, count: int = 32) -> list[Path]:
    """`count` images spread evenly over a folder of training frames (sorted by name)."""
    from vsegcli.data.datasets.base import images_in

    folder = Path(source)
    files = images_in(folder) if folder.is_dir() else []
    if not files:
        raise VsegError(f"{folder}: no .png/.jpg training frames to calibrate int8 with")
    step = max(1, len(files) // count)
    return files[::step][:count]


def calibration_digest(files: Sequence[Path]) -> str:
    """sha256 over the calibration frames' names and bytes, in order (the int8 cache key)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(f).name}:".encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def session_options(threads: int | None = None) -> Any:
    """ORT options: intra-op threads = torch's, one inter-op thread, and no spin-waiting (spinning
    workers collapse when other processes want the cores)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


@dataclass
class TorchBackend:
    """The model as it is (eager torch)."""

    model: Segmentor
    name: str = "torch"


class OrtBackend:
    """The model with its per-frame part run by an ONNX Runtime CPU session (see the module doc).

    One graph per input size (the exported padding and resizes are traced at that size), built
    on the first frame of that size and cached on disk; the batch dimension stays dynamic."""

    name = "onnxruntime"

    def __init__(self, model: Segmentor, precision: str = "fp32", mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0), calibration: str | Path | None = None,
                 threads: int | None = None, keep_fp32: Sequence[str] | None = None) -> None:
        if not ort_available():
            raise VsegError('--runtime onnxruntime needs ONNX Runtime: pip install "vseg[onnx]"')
        part = exported_part(model)
        if part is None:
            raise VsegError(f"{model.arch_name or type(model).__name__}: no per-frame part to run in ONNX Runtime; "
                            "use --runtime torch")
        if precision not in ("fp32", "int8"):
            raise VsegError(f"--runtime onnxruntime runs fp32 or int8, not {precision}")
        self.ranges: Int8Ranges | None = None
        self.files: list[Path] = []  # the calibration frames (int8 from a folder)
        self.weights = weights_hash(model)
        recipe = INT8_CONSERVATIVE
        if precision == "int8":  # nothing (usable) to calibrate with: say so before the first frame
            calibration = calibration_source(calibration)
            if calibration.is_dir():
                self.files = calibration_images(calibration)
            else:
                self.ranges = Int8Ranges.read(calibration)
                if model.arch_name and self.ranges.architecture != model.arch_name:
                    raise VsegError(f"{calibration} holds int8 ranges of {self.ranges.architecture}, not "
                                    f"{model.arch_name}")
                if self.ranges.weights != self.weights:
                    raise VsegError(f"{calibration} was measured on other weights (another checkpoint, or BatchNorm "
                                    f"not folded); remake it, or calibrate on frames: {CALIBRATION_ENV}=FOLDER")
                recipe = self.ranges.recipe
        self.part, self.precision, self.torch_model = part, precision, model
        self.mean, self.std = list(mean), list(std)
        self.calibration, self.threads = calibration, threads
        self.keep_fp32 = tuple(recipe if keep_fp32 is None else keep_fp32)
        self.sessions: dict[tuple[int, int], Any] = {}
        self.paths: dict[tuple[int, int], Path] = {}
        self.model = _with_ort_part(model, part, self._run)

    @property
    def recipe_name(self) -> str:
        """The INT8_RECIPES name of the fp32-kept patterns, or "custom"."""
        return next((name for name, r in INT8_RECIPES.items() if r == self.keep_fp32), "custom")

    def graph_path(self, size: tuple[int, int]) -> Path:
        """The cached graph for input size (h, w), exported (and quantised) if not there yet."""
        model, part = self.torch_model, self.part
        tag = f"{size[0]}x{size[1]}"
        fp32_path = cache_dir() / f"{cache_key(model, part, 'fp32', tag, self.weights)}.onnx"
        if not fp32_path.is_file():
            export_onnx(model, part, fp32_path, size)
        if self.precision != "int8":
            return fp32_path
        # Everything the activation ranges depend on: the frames' content (names alone repeat
        # across folders: VSPW's 00000000.jpg in every video) and the normalisation they get, or
        # the ranges file's content as validated.
        source = self.ranges.digest if self.ranges else calibration_digest(self.files)
        extra = f"{tag};{','.join(self.keep_fp32)};minmax;{source};mean={self.mean};std={self.std}"
        path = cache_dir() / f"{cache_key(model, part, 'int8', extra, self.weights)}.onnx"
        if not path.is_file():
            from vsegcli.data.datasets.base import read_image  # the training-frame reader

            arrays = self.ranges.ranges if self.ranges else [self.prepare(read_image(p), size) for p in self.files]
            quantize_int8(fp32_path, path, arrays, self.keep_fp32)
        return path

    def prepare(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A training frame (H, W, 3) uint8 -> the graph's input at `size`, as inference prepares it."""
        from vsegcli.runtime.predictor import prepare_pixels

        return prepare_pixels(torch.from_numpy(image), size, self.mean, self.std).numpy()

    def session_for(self, size: tuple[int, int]) -> Any:
        if size not in self.sessions:
            import onnxruntime as ort

            path = self.paths[size] = self.graph_path(size)  # the cached graph each size runs
            self.sessions[size] = ort.InferenceSession(str(path), session_options(self.threads),
                                                       providers=["CPUExecutionProvider"])
        return self.sessions[size]

    def _run(self, x: torch.Tensor) -> Any:
        session = self.session_for((int(x.shape[-2]), int(x.shape[-1])))
        outs = session.run(None, {"images": x.detach().float().contiguous().cpu().numpy()})
        tensors = [torch.from_numpy(o) for o in outs]
        if self.part == "encode":
            from vsegcli.models.mrcfa import FrameFeatures

            return FrameFeatures(*tensors)
        return tensors[0]


def _with_ort_part(model: Segmentor, part: str, run: Callable[[torch.Tensor], Any]) -> Segmentor:
    """A shallow copy of `model` (shares all modules and weights) whose per-frame method is `run`."""
    proxy = copy.copy(model)
    name = {"frame": "forward_frame", "features": "features", "encode": "encode"}[part]
    object.__setattr__(proxy, name, run)
    return proxy


def resolve_runtime(runtime: str, model: Segmentor, device: torch.device, precision: str) -> str:
    """"auto" -> onnxruntime when installed, on CPU, the model has an exportable per-frame part and
    the precision is one ORT runs (fp32, int8); else torch. Explicit choices are checked."""
    runtime = runtime.lower()
    if runtime not in RUNTIMES:
        raise VsegError(f"unknown runtime {runtime!r}: use torch, onnxruntime or auto")
    if runtime == "auto":
        if device.type == "cpu" and precision in ("fp32", "int8") and ort_available() and exported_part(model) is not None:
            return "onnxruntime"
        return "torch"
    if runtime == "onnxruntime" and device.type != "cpu":
        raise VsegError("--runtime onnxruntime runs on the CPU; use --runtime torch on a GPU")
    return runtime


def make_backend(runtime: str, model: Segmentor, device: torch.device, precision: str,
                 mean: Sequence[float], std: Sequence[float], calibration: str | Path | None = None
                 ) -> TorchBackend | OrtBackend:
    """The backend a Predictor runs its model through (`resolve_runtime` decides "auto")."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise VsegError("bf16 on CPU needs native bf16 (AVX512-BF16 or AMX), which this CPU lacks; "
                        "use --precision fp32")
    if precision == "int8" and runtime == "torch":
        runtime = "auto"  # int8 exists only as an ORT graph: `--precision int8` alone is enough
    chosen = resolve_runtime(runtime, model, device, precision)
    if precision == "int8" and chosen != "onnxruntime":
        raise VsegError('--precision int8 runs in ONNX Runtime on the CPU: pip install "vseg[onnx]" and use '
                        "--runtime onnxruntime (or auto) with --device cpu")
    if chosen == "onnxruntime":
        return OrtBackend(model, precision, mean, std, calibration=calibration)
    return TorchBackend(model)


# CamVid val mIoU of each shipped model by precision on CPU (docs/PERFORMANCE.md, "Precisions"):
# a lossy precision is offered for an architecture only when it stays within MAX_MIOU_DROP of fp32.
MAX_MIOU_DROP = 0.5
MEASURE_ENV = "VSEG_MEASURE_PRECISION"  # =1: skip the check (benchmarks/precision_accuracy.py sets it)
# Measured with benchmarks/precision_accuracy.py (2026-11-30, ORT 1.32, torch 2.13, this CPU:
# AVX512-BF16, no AMX); int8 = the ranges files shipped beside the checkpoints (their recipe; MinMax on
# 32 CamVid train frames).
MEASURED_MIOU: dict[str, dict[str, float]] = {
    # the retrained effl0 / stt-effl0 of issue 14; int8 with the recipe and ranges shipped beside them
    "effl0": {"fp32": 66.66, "bf16": 66.59, "int8": 66.55},
    "stt-effl0": {"fp32": 66.86, "bf16": 66.79, "int8": 66.82},
    "mrcfa-effl0": {"fp32": 65.68, "bf16": 65.80, "int8": 65.57},
}


def check_precision(architecture: str, precision: str, device: torch.device) -> None:
    """Refuse int8 (anywhere) and bf16 on CPU for an architecture whose measured CamVid val mIoU in
    that precision fell more than MAX_MIOU_DROP below fp32, or (int8) was never measured."""
    if precision not in ("int8", "bf16") or (precision == "bf16" and device.type != "cpu"):
        return
    if os.environ.get(MEASURE_ENV) == "1":  # measuring the accuracy that this table records
        return
    scores = MEASURED_MIOU.get(architecture, {})
    if precision in scores and "fp32" in scores:
        drop = scores["fp32"] - scores[precision]
        if drop > MAX_MIOU_DROP:
            raise VsegError(f"--precision {precision} is not offered for {architecture}: CamVid val mIoU "
                            f"{scores[precision]:.2f} vs {scores['fp32']:.2f} in fp32 (more than {MAX_MIOU_DROP} "
                            "lower); use --precision fp32")
    elif precision == "int8":
        measured = ", ".join(a for a, s in MEASURED_MIOU.items()
                             if "int8" in s and s["fp32"] - s["int8"] <= MAX_MIOU_DROP) or "none"
        raise VsegError(f"--precision int8 was not validated for {architecture} (accuracy unmeasured); "
                        f"validated: {measured}. Use --precision fp32")
