"""Native checkpoint format, foreign layouts (NVlabs/mmseg SegFormer, official MRCFA), strict
loading, architecture detection and safe loading of pickles."""
from __future__ import annotations

import importlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from vsegcli.checkpoints import (
    CheckpointMeta,
    convert_checkpoint,
    detect_architecture,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from vsegcli.errors import NeedsOption, VsegError
from vsegcli.data.labels import get_label_set
from vsegcli.models import build_model

from ckptgen import generated_layout, mrcfa_layout, mrcfa_state_dict, reference_dir, tsv_layout

REPO = Path(__file__).resolve().parents[1]


def _model(arch: str = "segformer-b0", k: int = 19, seed: int = 0, **options):
    torch.manual_seed(seed)
    m = build_model(arch, k, **options)
    with torch.no_grad():  # non-trivial BN statistics, so a dropped buffer would show
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.num_batches_tracked.fill_(123)
    return m.eval()


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def b0():
    return _model()


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# Native format


def test_native_roundtrip_fp32_is_exact(b0, x, tmp_path):
    meta = CheckpointMeta.from_model(b0, input_size=512, provenance={"source": "unit test", "cmd": ["vseg", "train"]})
    path = save_checkpoint(b0, meta, tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.source_format == "vseg" and loaded.ignored_keys == [] and loaded.path == path
    assert loaded.meta == meta
    assert loaded.meta.label_set == "cityscapes" and loaded.meta.classes[0] == "road"
    assert not loaded.model.training
    _assert_same_weights(loaded.model.state_dict(), b0.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded.model(x), b0(x))


def test_native_fp16_is_small_and_loads_as_fp32(b0, tmp_path):
    meta = CheckpointMeta.from_model(b0)
    full = save_checkpoint(b0, meta, tmp_path / "full.safetensors")
    half = save_checkpoint(b0, meta, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    raw, _ = read_state_dict(half)
    assert raw["decode_head.linear_pred.weight"].dtype == torch.float16
    assert raw["decode_head.linear_fuse.bn.num_batches_tracked"].dtype == torch.int64  # ints stay ints

    loaded = load_checkpoint(half).model.state_dict()
    for k, ref in b0.state_dict().items():
        assert loaded[k].dtype == ref.dtype, k
        if ref.is_floating_point():
            torch.testing.assert_close(loaded[k], ref, rtol=1e-3, atol=1e-4)
        else:
            assert torch.equal(loaded[k], ref)


def test_metadata_roundtrip_all_fields(tmp_path):
    m = _model("segformer-b0", 11)
    meta = CheckpointMeta.from_model(m, label_set=get_label_set("camvid"), input_size=360,
                                     provenance={"dataset": "camvid", "iters": 80000, "nested": {"a": [1, 2]}})
    meta.mean, meta.std = [120.0, 110.0, 100.0], [60.0, 55.0, 50.0]
    path = save_checkpoint(m, meta, tmp_path / "camvid.safetensors")
    _, header = read_state_dict(path)
    assert header["format_version"] == 1 and header["architecture"] == "segformer-b0"
    assert header["arch_options"] == {"variant": "b0", "embed_dim": 256}
    back = load_checkpoint(path).meta
    assert back == meta
    assert back.to_label_set() is get_label_set("camvid")  # the standard set, with its id maps


def test_generic_label_set_for_unusual_class_count(tmp_path):
    m = _model("segformer-b0", 5)
    meta = CheckpointMeta.from_model(m)
    assert meta.label_set is None and len(meta.classes) == len(meta.palette) == 5
    with pytest.raises(VsegError, match="classes"):
        CheckpointMeta.from_model(m, label_set=get_label_set("camvid"))


def test_save_is_atomic(b0, tmp_path, monkeypatch):
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"previous version")

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        save_checkpoint(b0, CheckpointMeta.from_model(b0), target)
    assert target.read_bytes() == b"previous version"  # an interrupted save never replaces the file
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # and leaves no temp file

    monkeypatch.undo()
    save_checkpoint(b0, CheckpointMeta.from_model(b0), target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert load_checkpoint(target).meta.architecture == "segformer-b0"


def test_save_checks_name_and_metadata(b0, tmp_path):
    meta = CheckpointMeta.from_model(b0)
    with pytest.raises(VsegError, match=r"\.safetensors"):
        save_checkpoint(b0, meta, tmp_path / "m.pth")
    meta.classes = meta.classes[:-1]
    with pytest.raises(VsegError, match="class names"):
        save_checkpoint(b0, meta, tmp_path / "m.safetensors")


def test_native_unknown_architecture_suggests(b0, tmp_path):
    meta = CheckpointMeta.from_model(b0)
    path = save_checkpoint(b0, meta, tmp_path / "m.safetensors")
    with pytest.raises(VsegError, match="Did you mean"):
        load_checkpoint(path, architecture="segformer-bo")
    meta.architecture = "segformer-b9"
    b0.arch_name, saved = "segformer-b9", b0.arch_name
    try:
        save_checkpoint(b0, meta, tmp_path / "future.safetensors")
    finally:
        b0.arch_name = saved
    with pytest.raises(VsegError, match="unknown architecture 'segformer-b9'"):
        load_checkpoint(tmp_path / "future.safetensors")


# ---------------------------------------------------------------------------------------------
# NVlabs / mmseg SegFormer layouts


def _nvlabs_sd(model, k: int) -> dict:
    sd = {k_: v.clone() for k_, v in model.state_dict().items()}
    sd["decode_head.conv_seg.weight"] = torch.randn(k, 128, 1, 1)  # unused base-class leftover
    sd["decode_head.conv_seg.bias"] = torch.randn(k)
    return sd


def _mmcv_meta(classes, palette) -> dict:
    # what mmcv/mmseg 0.x put in `meta`: plain strings, ints, tuples, lists, dicts
    return {"mmseg_version": "0.11.0+abc", "mmcv_version": "1.3.0", "config": "model = dict(type='EncoderDecoder')\n",
            "CLASSES": tuple(classes), "PALETTE": [list(c) for c in palette], "epoch": 1, "iter": 160000,
            "time": "Mon Aug  8 2022", "hook_msgs": {"last_ckpt": "work_dirs/iter_160000.pth"}}


@pytest.mark.parametrize("layout", ["bare", "wrapped", "module-prefix"])
def test_nvlabs_layouts(b0, x, tmp_path, layout):
    cs = get_label_set("cityscapes")
    sd = _nvlabs_sd(b0, 19)
    if layout == "bare":
        obj = sd
    else:
        if layout == "module-prefix":
            sd = {f"module.{k}": v for k, v in sd.items()}
        opt = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 6e-5, "params": [0]}]}
        obj = {"meta": _mmcv_meta(cs.classes, cs.palette), "state_dict": sd, "optimizer": opt}
    path = tmp_path / "segformer.pth"
    torch.save(obj, path)

    loaded = load_checkpoint(path)
    assert loaded.source_format == "mmseg"
    assert loaded.meta.architecture == "segformer-b0"
    assert loaded.meta.arch_options == {"variant": "b0", "embed_dim": 256}
    assert loaded.ignored_keys == ["decode_head.conv_seg.bias", "decode_head.conv_seg.weight"]
    assert loaded.meta.label_set == "cityscapes" and loaded.meta.classes == list(cs.classes)
    _assert_same_weights(loaded.model.state_dict(), b0.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded.model(x), b0(x))
    if layout != "bare":
        assert loaded.meta.provenance["mmseg_version"] == "0.11.0+abc"
        _, meta = read_state_dict(path)
        assert meta["CLASSES"] == tuple(cs.classes)


def test_mmcv_meta_classes_and_palette_are_used(tmp_path):
    m = _model("segformer-b0", 3)
    names, palette = ["sky", "tree", "car"], [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    torch.save({"meta": _mmcv_meta(names, palette), "state_dict": m.state_dict()}, tmp_path / "c.pth")
    meta = load_checkpoint(tmp_path / "c.pth").meta
    assert meta.classes == names and meta.palette == palette and meta.label_set is None


def test_numpy_values_in_mmcv_meta_load(tmp_path):
    np = pytest.importorskip("numpy")
    m = _model("segformer-b0", 3)
    meta = {"PALETTE": np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.uint8), "best_score": np.float64(0.5)}
    torch.save({"meta": meta, "state_dict": m.state_dict()}, tmp_path / "np.pth")
    assert load_checkpoint(tmp_path / "np.pth").meta.palette == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_missing_key_is_an_error(b0, tmp_path):
    sd = dict(b0.state_dict())
    del sd["backbone.block2.1.attn.q.weight"]
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(VsegError, match=r"1 missing keys \(backbone\.block2\.1\.attn\.q\.weight\)"):
        load_checkpoint(tmp_path / "m.pth")


def test_unexpected_key_is_an_error(b0, tmp_path):
    sd = dict(b0.state_dict())
    sd["decode_head.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(VsegError, match=r"1 unexpected keys \(decode_head\.extra\.weight\)"):
        load_checkpoint(tmp_path / "m.pth")


def test_wrong_shape_is_an_error(b0, tmp_path):
    sd = dict(b0.state_dict())
    sd["backbone.block1.0.mlp.fc1.weight"] = torch.zeros(64, 32)
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(VsegError) as err:
        load_checkpoint(tmp_path / "m.pth")
    msg = str(err.value)
    assert "backbone.block1.0.mlp.fc1.weight" in msg and "[64, 32]" in msg and "[128, 32]" in msg
    assert "\n" not in msg


def test_missing_bn_counter_is_tolerated(b0, tmp_path):
    sd = {k: v for k, v in b0.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pth")
    assert load_checkpoint(tmp_path / "old.pth").meta.architecture == "segformer-b0"


def test_class_count_and_architecture_must_agree(b0, tmp_path):
    torch.save(b0.state_dict(), tmp_path / "m.pth")
    with pytest.raises(VsegError, match="predicts 19 classes but 124 were requested"):
        load_checkpoint(tmp_path / "m.pth", num_classes=124)
    with pytest.raises(VsegError, match="looks like a segformer-b0 checkpoint, not segformer-b1"):
        load_checkpoint(tmp_path / "m.pth", architecture="segformer-b1")
    with pytest.raises(VsegError, match="Did you mean"):
        load_checkpoint(tmp_path / "m.pth", architecture="segformr-b0")
    assert load_checkpoint(tmp_path / "m.pth", architecture="segformer-b0", num_classes=19).model.num_classes == 19
    meta = CheckpointMeta.from_model(b0)
    save_checkpoint(b0, meta, tmp_path / "n.safetensors")
    with pytest.raises(VsegError, match="predicts 19 classes but 11"):
        load_checkpoint(tmp_path / "n.safetensors", num_classes=11)


@pytest.mark.parametrize("variant, embed_dim", [("b0", None), ("b1", None), ("b2", None), ("b2", 256)])
def test_detect_segformer(variant, embed_dim):
    opts = {"embed_dim": embed_dim} if embed_dim else {}
    m = build_model(f"segformer-{variant}", 7, **opts)
    name, options = detect_architecture(m.state_dict())
    assert name == f"segformer-{variant}"
    assert options == {"variant": variant, "embed_dim": embed_dim or (256 if variant in ("b0", "b1") else 768)}


def test_detect_refuses_backbone_only_and_unknown():
    m = build_model("segformer-b0", 2)
    backbone = {k[len("backbone."):]: v for k, v in m.state_dict().items() if k.startswith("backbone.")}
    with pytest.raises(VsegError, match="ImageNet MiT backbone"):
        detect_architecture(backbone)
    with pytest.raises(VsegError, match="no SegFormer decode head"):
        detect_architecture({f"backbone.{k}": v for k, v in backbone.items()})
    with pytest.raises(NeedsOption, match="architecture=") as info:  # the library names its keyword
        detect_architecture({"conv1.weight": torch.zeros(1)})
    assert info.value.option == "architecture" and "--arch" in info.value.worded("--arch")


# ---------------------------------------------------------------------------------------------
# Official MRCFA layout


@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_generated_layout_matches_reference_tables(variant):
    table = tsv_layout(variant)
    if table is None:
        pytest.skip("MRCFA key tables not found in ../shared/docs/reference (or VSEG_REFERENCE_DIR)")
    assert generated_layout(variant) == table
    assert len(table) == {"b0": 240, "b1": 260}[variant]


@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_detect_mrcfa(variant):
    shapes = {k: torch.empty(s) for k, s in mrcfa_layout(variant).items()}
    assert detect_architecture(shapes) == (f"mrcfa-{variant}", {"variant": variant})
    wrapped = {f"module.{k}": v for k, v in shapes.items()}
    assert detect_architecture(wrapped)[0] == f"mrcfa-{variant}"


def _mrcfa_available() -> bool:
    try:
        importlib.import_module("vsegcli.models.mrcfa")
    except ImportError:
        return False
    return True


needs_mrcfa = pytest.mark.skipif(not _mrcfa_available(), reason="vsegcli.models.mrcfa not available yet")


@needs_mrcfa
@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_mrcfa_official_checkpoint_loads_strictly(variant, tmp_path):
    vspw = get_label_set("vspw")
    sd = mrcfa_state_dict(variant)
    opt = {"state": {}, "param_groups": [{"lr": 6e-5, "params": []}]}
    torch.save({"meta": _mmcv_meta(vspw.classes, vspw.palette), "state_dict": sd, "optimizer": opt},
               tmp_path / "mrcfa.pth")

    loaded = load_checkpoint(tmp_path / "mrcfa.pth")
    assert loaded.source_format == "mrcfa"
    assert loaded.meta.architecture == f"mrcfa-{variant}"
    assert loaded.meta.arch_options.get("variant") == variant
    assert loaded.meta.num_classes == 124 and loaded.meta.label_set == "vspw"
    # Nothing dropped: the training-only conv_seg and deco1..3 load too (fine-tuning continues).
    assert loaded.ignored_keys == []
    state = loaded.model.state_dict()
    assert set(state) == set(sd)
    for k, v in state.items():
        assert torch.equal(v, sd[k].to(v.dtype)), k


@needs_mrcfa
def test_mrcfa_native_roundtrip(tmp_path):
    m = _model("mrcfa-b1", 124)
    path = save_checkpoint(m, CheckpointMeta.from_model(m, input_size=480), tmp_path / "mrcfa.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.meta.architecture == "mrcfa-b1" and loaded.meta.arch_options == m.arch_options
    _assert_same_weights(loaded.model.state_dict(), m.state_dict())


@needs_mrcfa
def test_mrcfa_b1_with_single_unit_hpn_is_refused(tmp_path):
    """The first MRCFA commit used one HPN unit for every backbone; a B1 file of that kind must fail loudly."""
    sd = {k: v for k, v in mrcfa_state_dict("b1").items() if ".hpn." not in k}
    for k, shape in generated_layout("b0").items():
        if ".hpn." in k:
            sd[k] = torch.zeros(shape)
    torch.save({"state_dict": sd}, tmp_path / "old.pth")
    with pytest.raises(VsegError, match="does not fit mrcfa-b1"):
        load_checkpoint(tmp_path / "old.pth")


def test_hf_names_from_table_map_back(tmp_path):
    """The HF column of the reference table, read in reverse, gives the NVlabs names (kv re-fused)."""
    ref = reference_dir()
    if ref is None:
        pytest.skip("MRCFA key tables not found in ../shared/docs/reference (or VSEG_REFERENCE_DIR)")
    from vsegcli.checkpoints.convert import hf_to_native_keys

    native, hf = {}, {}
    g = torch.Generator().manual_seed(0)
    for line in (ref / "keys_mrcfa_b0.tsv").read_text().splitlines():
        key, shape, hf_name = line.split("\t")
        if hf_name.startswith("("):
            continue  # no HF counterpart
        t = torch.randn(json.loads(shape), generator=g)
        native[key] = t
        if " | " in hf_name:  # kv: rows [0:C] key, [C:2C] value
            c = t.shape[0] // 2
            (k_name, _), (v_name, _) = (part.split(" ", 1) for part in hf_name.split(" | "))
            hf[k_name], hf[v_name] = t[:c], t[c:]
        else:
            hf[hf_name] = t
    back = hf_to_native_keys(hf)
    assert back.keys() == native.keys()
    for k in native:
        assert torch.equal(back[k], native[k]), k


# ---------------------------------------------------------------------------------------------
# Safety and bad files


class _SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _OpenCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("payload", [_SystemCall, _OpenCall])
@pytest.mark.parametrize("how", ["zip", "legacy"])
def test_malicious_pickle_is_refused(b0, tmp_path, payload, how):
    marker = tmp_path / "PWNED"
    obj = {"state_dict": dict(b0.state_dict()), "meta": {"x": payload(marker)}}
    path = tmp_path / "evil.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=(how == "zip"))
    with pytest.raises(VsegError, match="refuses to load.*contains code") as err:
        load_checkpoint(path)
    assert "convert it in a trusted environment" in str(err.value)
    with pytest.raises(VsegError):
        read_state_dict(path)
    assert not marker.exists()


def test_plain_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.bin"
    for protocol in (2, 4):
        with open(path, "wb") as f:
            pickle.dump({"w": _SystemCall(marker)}, f, protocol=protocol)
        with pytest.raises(VsegError, match="contains code"):
            load_checkpoint(path)
    assert not marker.exists()


def _truncated_zip(tmp_path: Path, b0) -> Path:
    torch.save(b0.state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.pth"


@pytest.mark.parametrize("kind", ["text", "random", "empty", "truncated-zip", "truncated-safetensors"])
def test_bad_files_are_not_checkpoints(b0, tmp_path, kind):
    if kind == "text":
        path = tmp_path / "notes.pth"
        path.write_text("these are not weights\n" * 20)
    elif kind == "random":
        path = tmp_path / "noise.pth"
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3),
                                       dtype=torch.uint8).numpy().tobytes())
    elif kind == "empty":
        path = tmp_path / "empty.safetensors"
        path.write_bytes(b"")
    elif kind == "truncated-zip":
        path = _truncated_zip(tmp_path, b0)
    else:
        full = save_checkpoint(b0, CheckpointMeta.from_model(b0), tmp_path / "full.safetensors")
        path = tmp_path / "cut.safetensors"
        path.write_bytes(full.read_bytes()[:5000])
    with pytest.raises(VsegError, match="not a checkpoint"):
        load_checkpoint(path)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(VsegError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(VsegError, match="without model weights"):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------------------------------------
# Conversion


def test_convert_nvlabs_to_native(b0, x, tmp_path):
    cs = get_label_set("cityscapes")
    src = tmp_path / "segformer.b0.1024x1024.city.160k.pth"
    torch.save({"meta": _mmcv_meta(cs.classes, cs.palette), "state_dict": _nvlabs_sd(b0, 19)}, src)
    dst = convert_checkpoint(src, tmp_path / "out" / "segformer-b0-city.safetensors", half=True,
                             input_size=1024, provenance={"training": "NVlabs release"})
    loaded = load_checkpoint(dst)
    assert loaded.source_format == "vseg"
    assert loaded.meta.input_size == 1024 and loaded.meta.label_set == "cityscapes"
    assert loaded.meta.provenance["source_format"] == "mmseg"
    assert loaded.meta.provenance["training"] == "NVlabs release"
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), b0(x), rtol=2e-2, atol=2e-2)  # fp16 weights

    with pytest.raises(VsegError, match="overwrite the input"):
        convert_checkpoint(dst, dst)
    with pytest.raises(VsegError, match="cannot set"):
        convert_checkpoint(src, tmp_path / "x.safetensors", colour="red")
    with pytest.raises(VsegError, match="11 classes"):
        convert_checkpoint(src, tmp_path / "x.safetensors", label_set="camvid")


def test_convert_with_label_set_override(tmp_path):
    m = _model("segformer-b0", 19)
    torch.save(m.state_dict(), tmp_path / "m.pth")
    dst = convert_checkpoint(tmp_path / "m.pth", tmp_path / "m.safetensors", label_set="cityscapes")
    meta = load_checkpoint(dst).meta
    assert meta.classes == list(get_label_set("cityscapes").classes) and meta.label_set == "cityscapes"
    names = [f"c{i}" for i in range(19)]
    dst = convert_checkpoint(dst, tmp_path / "custom.safetensors", classes=names)
    meta = load_checkpoint(dst).meta
    assert meta.classes == names and meta.label_set is None  # custom names are not the standard set
    with pytest.raises(VsegError, match="give exactly 19 names"):
        convert_checkpoint(dst, tmp_path / "bad.safetensors", classes=names[:3])



def test_convert_sets_stt_key_frames(tmp_path):
    """`vseg convert --num-frames 3`: an STT model trained with T = 7 runs with T = 3 — same
    weights, the new T in the metadata, and a session that attends to 3 frames: its labels equal
    those of the same weights built with num_frames=3, and differ from T = 7 once 4+ frames exist."""
    m = _model("stt-effl0", 11, num_frames=7)
    with torch.no_grad():
        m.stt.out.weight.normal_(0, 0.5)  # a trained-looking STT: its output is not zero
    meta = CheckpointMeta.from_model(m)
    src = save_checkpoint(m, meta, tmp_path / "stt7.safetensors")
    r = _cli("convert", str(src), str(tmp_path / "stt3.safetensors"), "--num-frames", "3")
    assert r.exit_code == 0, r.output
    t3 = load_checkpoint(tmp_path / "stt3.safetensors")
    assert t3.meta.arch_options["num_frames"] == 3 and t3.model.stt.num_frames == 3
    assert t3.meta.provenance["converted"] == {"num_frames": 3, "trained_num_frames": 7}
    with pytest.raises(VsegError, match="whole number"):
        convert_checkpoint(src, tmp_path / "bad.safetensors", num_frames=2.5)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in t3.model.state_dict().items())
    ref = _model("stt-effl0", 11, num_frames=3)
    ref.load_state_dict(m.state_dict())
    frames = torch.randn(6, 1, 3, 64, 96)
    s3, sref, s7 = t3.model.eval().new_session(), ref.eval().new_session(), m.new_session()
    with torch.no_grad():
        outs = [(s3.step(f), sref.step(f), s7.step(f)) for f in frames]
    assert all(torch.equal(a, b) for a, b, _ in outs)
    assert not torch.equal(outs[-1][0], outs[-1][2])  # T = 7 reads frames T = 3 no longer does
    effl0 = _model("effl0", 11)
    plain = save_checkpoint(effl0, CheckpointMeta.from_model(effl0), tmp_path / "effl0.safetensors")
    with pytest.raises(VsegError, match="effl0 has no STT"):
        convert_checkpoint(plain, tmp_path / "e.safetensors", num_frames=2)
    assert not (tmp_path / "e.safetensors").exists()

# ---------------------------------------------------------------------------------------------
# Formats by content, not by name; every unreadable file is one line; hints in the caller's words


def _cli(*args: str):
    from click.testing import CliRunner

    from vsegcli.cli.main import cli

    return CliRunner().invoke(cli, list(args))


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("writer", ["torch-zip", "torch-legacy", "safetensors-as-pth"])
def test_format_is_read_from_the_bytes_not_the_name(b0, x, tmp_path, writer):
    """torch 2.13's torch.load sends any '*.safetensors' path to safetensors: a torch file under
    that name must still load (and a safetensors file named .pth)."""
    if writer == "safetensors-as-pth":
        path = save_checkpoint(b0, CheckpointMeta.from_model(b0), tmp_path / "w.safetensors")
        path = path.rename(tmp_path / "w.pth")
    else:
        path = tmp_path / "w.safetensors"
        torch.save(b0.state_dict(), path, _use_new_zipfile_serialization=writer == "torch-zip")
    loaded = load_checkpoint(path)
    _assert_same_weights(loaded.model.state_dict(), b0.state_dict())
    r = _cli("convert", str(path), str(tmp_path / "out.safetensors"))
    assert r.exit_code == 0, r.output
    _assert_same_weights(load_checkpoint(tmp_path / "out.safetensors").model.state_dict(), b0.state_dict())


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, b0) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    torch.save(b0.state_dict(), d / "full.pth")
    data = (d / "full.pth").read_bytes()
    out = {"garbage": d / "garbage.safetensors", "truncated": d / "truncated.safetensors"}
    out["garbage"].write_bytes(b"\x80\x04not really a pickle" * 50)
    out["truncated"].write_bytes(data[: len(data) // 3])  # a torch zip, cut, under a safetensors name
    return out


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
@pytest.mark.parametrize("command", ["run", "convert", "eval", "bench"])
def test_unreadable_checkpoint_is_one_line_exit_2(bad_files, tiny_video, tmp_path, command, kind):
    bad = str(bad_files[kind])
    if command == "run":
        args = ["run", str(tiny_video), "-c", bad, "-o", str(tmp_path / "o.mp4")]
    elif command == "convert":
        args = ["convert", bad, str(tmp_path / "o.safetensors")]
    elif command == "eval":
        from datasetgen import make_camvid

        make_camvid(tmp_path / "camvid", sequences={"0016E5": 2})
        args = ["eval", "--dataset", "camvid", "--data-root", str(tmp_path / "camvid"), "-c", bad]
    else:
        args = ["bench", "-c", bad, "--device", "cpu"]
    line = _one_line(_cli(*args))
    assert "not a checkpoint" in line or "refuses" in line, line
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o.*"))


def test_plain_state_dict_hints_name_the_commands_own_flag(tiny_video, tmp_path):
    """A bare effl0 state dict (no metadata): `run` points at -m/--model (not --arch), and with
    -m the class count comes from the classifier's shape (run has no --num-classes)."""
    m = _model("effl0", 11, seed=1)
    plain = tmp_path / "plain_effl0_state_dict.pth"
    torch.save(m.state_dict(), plain)
    out = tmp_path / "out.mp4"
    line = _one_line(_cli("run", str(tiny_video), "-c", str(plain), "-o", str(out)))
    assert "-m/--model" in line and "--arch" not in line and not out.exists()
    line = _one_line(_cli("convert", str(plain), str(tmp_path / "c.safetensors")))
    assert "-m/--model" in line and "--arch" not in line
    # wrong architecture: the hint still names run's flag; nothing about --num-classes
    line = _one_line(_cli("run", str(tiny_video), "-c", str(plain), "-m", "stt-effl0", "-o", str(out)))
    assert "-m/--model" in line and "--num-classes" not in line and "--arch" not in line

    r = _cli("run", str(tiny_video), "-c", str(plain), "-m", "effl0", "-o", str(out), "--json", "--quiet")
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 0 and '"num_classes": 11' in r.stdout


@pytest.mark.parametrize("arch,k", [("effl0", 7), ("stt-effl0", 11), ("pspnet-r18", 5)])
def test_class_count_is_inferred_from_the_classifier(tmp_path, arch, k):
    m = _model(arch, k)
    torch.save({"state_dict": m.state_dict()}, tmp_path / "m.pth")
    loaded = load_checkpoint(tmp_path / "m.pth", architecture=arch)
    assert loaded.meta.num_classes == k and loaded.model.num_classes == k
    _assert_same_weights(loaded.model.state_dict(), m.state_dict())
