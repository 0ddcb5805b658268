"""MRCFA: official key layout, numerical match with the official code, streaming == clip."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vsegcli.errors import VsegError
from vsegcli.models import build_model, get_architecture
from vsegcli.models.mrcfa import MRCFA, CrossFrameAffinityMixin, mrcfa_reference_indices
from vsegcli.models.mrcfa import MRCFA_DILATION as MRCFA_DILATION_OFFICIAL
from vsegcli.models.temporal.cross_frame_affinity import HyperCorrelation

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KEY_TABLES = SHARED / "docs" / "reference"
REFERENCE = SHARED / "data" / "mrcfa_reference"
# Official keys inference never reads (built and loaded all the same: training uses deco1..3).
UNUSED_PREFIXES = ("decode_head.conv_seg.", "decode_head.deco1.", "decode_head.deco2.", "decode_head.deco3.")


def read_key_table(variant: str) -> list[tuple[str, list[int]]]:
    path = KEY_TABLES / f"keys_mrcfa_{variant}.tsv"
    if not path.exists():
        pytest.skip(f"../shared/docs/reference key table absent: {path}")
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    return [(r[0], json.loads(r[1])) for r in rows]


def synthetic_weights(rows: list[tuple[str, list[int]]], seed: int = 0) -> dict[str, torch.Tensor]:
    """The reference README's recipe: one draw per key, in table order."""
    torch.manual_seed(seed)
    out = {}
    for key, shape in rows:
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_mean"):
            out[key] = torch.randn(shape) * 0.1
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape) + 0.5
        elif key.endswith(".weight") and len(shape) == 1:  # LayerNorm / BatchNorm / GroupNorm
            out[key] = 1 + 0.1 * torch.randn(shape)
        else:
            out[key] = 0.02 * torch.randn(shape)
    return out


def small_model(seed: int = 0) -> MRCFA:
    """mrcfa-b0 with reference-like synthetic weights (small scale, eval mode, fp32)."""
    model = build_model("mrcfa-b0", num_classes=124)
    rows = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    model.load_state_dict(synthetic_weights(rows, seed))
    return model.eval()


def clip(seed: int, t: int = 12, h: int = 96, w: int = 160) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, t, 3, h, w, generator=g)


def test_reference_indices_follow_official_protocol() -> None:
    assert [mrcfa_reference_indices(t) for t in range(3)] == [[], [], []]
    assert [mrcfa_reference_indices(t) for t in range(3, 9)] == [
        [0, 1, 2], [0, 2, 3], [0, 2, 4], [0, 2, 4], [0, 3, 5], [0, 3, 6]
    ]
    assert mrcfa_reference_indices(9) == [0, 3, 6]
    assert mrcfa_reference_indices(100) == [91, 94, 97]
    with pytest.raises(ValueError):
        mrcfa_reference_indices(-1)


def test_registered_variants() -> None:
    for v in ("b0", "b1", "b2", "b3", "b4", "b5"):
        arch = get_architecture(f"mrcfa-{v}")
        assert arch.temporal and arch.family == "mrcfa" and arch.baseline == f"segformer-{v}"
        assert arch.defaults["embed_dim"] == 256
        assert arch.defaults["keep_ratio"] == (0.8 if v == "b0" else 0.5)
        assert arch.defaults["hpn_units"] == (2 if v == "b1" else 1)


@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_state_dict_matches_official_keys(variant: str) -> None:
    """Every official key, the training-only ones included: an official checkpoint drops nothing."""
    expected = dict(read_key_table(variant))
    model = build_model(f"mrcfa-{variant}", num_classes=124)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert model.training_only_keys() == {k for k in expected if k.startswith(UNUSED_PREFIXES)}
    assert len(model.training_only_keys()) == 8


def test_parameter_counts_match_paper() -> None:
    # Official totals minus the training-only conv_seg + deco1..3 (111,600) = the poster's Params column.
    expected = {"b0": 5_297_988, "b1": 16_337_655, "b2": 27_382_340, "b5": 84_629_060}
    for v, total in expected.items():
        model = build_model(f"mrcfa-{v}", num_classes=124)
        assert sum(p.numel() for p in model.parameters()) == total, v
        used = {k for k in model.state_dict()} - model.training_only_keys()
        assert sum(p.numel() for k, p in model.named_parameters() if k in used) == total - 111_600, v


def _official_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch off vseg's CPU fast paths: the batched affinity maps and deco4 applied to the
    E-channel mix, exactly as the official code orders the computation."""
    monkeypatch.setattr(HyperCorrelation, "token_major_devices", ())
    monkeypatch.setattr(CrossFrameAffinityMixin, "classify_mixed", CrossFrameAffinityMixin.classify_direct)


@pytest.mark.parametrize("variant,form", [("b0", "vseg"), ("b1", "vseg"), ("b0", "official"), ("b1", "official")])
def test_matches_official_reference(variant: str, form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if form == "official":
        _official_form(monkeypatch)
    ref_path, input_path = REFERENCE / f"mrcfa_{variant}_ref.pt", REFERENCE / "mrcfa_input_ref.pt"
    if not (ref_path.exists() and input_path.exists()):
        pytest.skip(f"../shared/data/mrcfa_reference outputs absent: {REFERENCE}")
    ref = torch.load(ref_path, weights_only=True)
    frames = torch.load(input_path, weights_only=True)["input"]
    # Every key is drawn in table order (the training-only ones too; inference never reads them).
    weights = synthetic_weights(read_key_table(variant))
    model = build_model(f"mrcfa-{variant}", num_classes=124).eval()
    model.load_state_dict(weights, strict=True)
    with torch.no_grad():
        out = model.clip_outputs(frames)
        fallback = model.forward_clip(frames[:, -2:])
    tol = 1e-4 * ref["logits"].abs().max().item()
    assert (out.logits - ref["logits"]).abs().max().item() <= tol
    assert (out.frame_logits - ref["frame_logits"]).abs().max().item() <= 1e-4 * ref["frame_logits"].abs().max().item()
    assert torch.equal(out.topk_mask, ref["topk_mask"])
    assert int(out.topk_mask[0, 0].sum()) == ref["tokens_kept"]
    # Fewer than 4 frames: the official fallback returns the target's per-frame logits.
    assert torch.allclose(fallback, out.frame_logits, atol=1e-6)


@pytest.fixture(scope="module")
def b0() -> MRCFA:
    return small_model()


@pytest.mark.parametrize("arch,batch", [("b0", 2), ("b1", 1)])  # b1: the 2-unit HPN layout
def test_cpu_fast_paths_equal_the_official_form(arch: str, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_model(f"mrcfa-{arch}", num_classes=19).eval()
    with torch.no_grad():  # GroupNorm affines and deco4 away from their init values
        for p in model.decode_head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(batch, 4, 3, 96, 160, generator=g)
    with torch.no_grad():
        fast = model.clip_outputs(frames)
        _official_form(monkeypatch)
        official = model.clip_outputs(frames)
    assert torch.equal(fast.topk_mask, official.topk_mask)
    err = (fast.logits - official.logits).abs().max() / official.logits.abs().max()
    assert err < 1e-5, err


def test_session_equals_clip(b0: MRCFA) -> None:
    frames = clip(1)
    session = b0.new_session()
    with torch.no_grad():
        for t in range(frames.shape[1]):
            streamed = session.step(frames[:, t])
            expected = b0.forward_clip(frames[:, mrcfa_reference_indices(t) + [t]])
            assert (streamed - expected).abs().max().item() <= 1e-5, t
            if t < 3:
                assert torch.allclose(streamed, b0.forward_frame(frames[:, t]), atol=1e-6)
            assert len(session.cache) <= 9
        # Reset starts a new video: frame 0 again gets the per-frame prediction.
        session.reset()
        assert torch.allclose(session.step(frames[:, 5]), b0.forward_frame(frames[:, 5]), atol=1e-6)


def test_backbone_runs_once_per_frame(b0: MRCFA, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = b0.backbone.forward

    def counting(x: torch.Tensor) -> list[torch.Tensor]:
        calls.append(x.shape[0])
        return original(x)

    monkeypatch.setattr(b0.backbone, "forward", counting)
    frames = clip(2, h=64, w=96)
    session = b0.new_session()
    for t in range(12):
        session.step(frames[:, t])
    assert calls == [1] * 12


def test_frame_order(b0: MRCFA) -> None:
    frames = clip(3, t=4)
    with torch.no_grad():
        out = b0.forward_clip(frames)
        permuted = b0.forward_clip(frames[:, [2, 0, 1, 3]])
        swapped = b0.forward_clip(frames[:, [0, 1, 3, 2]])
    scale = out.abs().max().item()
    assert (permuted - out).abs().max().item() <= 1e-5
    assert (swapped - out).abs().max().item() > 1e-2 * scale


def test_user_errors(b0: MRCFA) -> None:
    with pytest.raises(VsegError, match="divisible by 32"):
        b0.forward_clip(torch.zeros(1, 4, 3, 100, 96))
    with pytest.raises(ValueError):
        b0.forward_clip(torch.zeros(1, 5, 3, 64, 64))
    session = b0.new_session()
    session.step(torch.zeros(1, 3, 64, 64))
    with pytest.raises(VsegError, match="shape changed"):
        session.step(torch.zeros(1, 3, 64, 96))


def test_custom_offsets_session_equals_clip() -> None:
    """mrcfa-effl0 with offsets (-3, -2, -1): frame 0 alone, early frames repeat frame 0 (as the
    training clips do), and the streaming session equals forward_clip on those frames."""
    from vsegcli.models import build_model

    assert [mrcfa_reference_indices(t, (-3, -2, -1)) for t in range(5)] == [
        [], [0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]
    torch.manual_seed(0)
    model = build_model("mrcfa-effl0", 11, dilation=[-1, -3, -2]).eval()
    assert model.dilation == (-3, -2, -1) and model.history == 3 and model.output_stride == 8
    for p in model.decode_head.sr1_feat.parameters():  # random, non-zero values: the temporal path matters
        torch.nn.init.normal_(p, std=0.05)
    frames = torch.rand(1, 7, 3, 64, 96)
    session = model.new_session()
    with torch.no_grad():
        for t in range(7):
            got = session.step(frames[:, t])
            ids = model.reference_indices(t)
            want = model.forward_clip(frames[:, ids + [t]]) if ids else model.forward_frame(frames[:, t])
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            assert got.shape[-2:] == (8, 12)
        assert sorted(session.cache) == [4, 5, 6]
        plain = model.forward_frame(frames[:, 6])
    assert (got - plain).abs().max() > 1e-3  # the references changed the output
    with pytest.raises(VsegError, match="three distinct negative"):
        build_model("mrcfa-effl0", 11, dilation=[-3, -2, 0])


@pytest.mark.parametrize("dilation", [(-3, -2, -1), (-9, -6, -3)])
def test_reset_at_a_cut_equals_a_fresh_session(dilation: tuple[int, ...]) -> None:
    """Session.reset() (what the runtime calls at a shot cut): after shot A then reset, shot B's
    logits equal, to the bit, a fresh session's on shot B alone (step and step_many), and
    without the reset the output after the cut differs."""
    torch.manual_seed(1)
    model = build_model("mrcfa-effl0", 5, dilation=list(dilation)).eval()
    for p in model.decode_head.sr1_feat.parameters():  # non-zero values: references matter
        torch.nn.init.normal_(p, std=0.05)
    g = torch.Generator().manual_seed(4)
    n = 10 if dilation == MRCFA_DILATION_OFFICIAL else 5
    shot_a = torch.rand(1, n, 3, 64, 96, generator=g)
    shot_b = torch.rand(1, n, 3, 64, 96, generator=g) * 0.5 + 0.5
    with torch.no_grad():
        fresh = model.new_session()
        want = [fresh.step(shot_b[:, i]) for i in range(n)]
        session = model.new_session()
        for i in range(n):
            session.step(shot_a[:, i])
        stale = session.step(shot_b[:, 0])
        session.reset()
        got = [session.step(shot_b[:, i]) for i in range(n)]
        for i in range(n):
            assert torch.equal(got[i], want[i]), i
        assert (stale - want[0]).abs().max() > 1e-3
        session.reset()
        assert torch.equal(session.step_many(shot_b[0]), model.new_session().step_many(shot_b[0]))


# ----------------------------------------------------------------------------------------------
# Training: the official objective, and official checkpoints load with nothing dropped
# ----------------------------------------------------------------------------------------------
def _official_training_loss(model: MRCFA, frames: torch.Tensor, labels: torch.Tensor, all_pixel_mean: bool) -> torch.Tensor:
    """A direct transcription of the official training branch (`SegFormerHead_clips2_resize_1_8_
    hypercorrelation2_topk_ensemble4.forward` + `BaseDecodeHead_clips.losses`, self_ensemble2):
    x = per-frame logits of all 4 frames; out_r = deco_r(atten_r @ values_r) for the 3 references;
    out4 = deco4(mean_r + target _c at stride 8); loss = 0.5·CE(x, every frame's GT) + CE(out1..4,
    target GT), logits resized to the labels first. `all_pixel_mean`: the 2022 mmseg reduction
    (mean over every pixel, ignored ones counting 0) instead of over the labelled pixels."""
    from vsegcli.models.heads.segformer_head import resize as mm_resize

    head = model.decode_head
    b, t = frames.shape[:2]
    c1, c2, c3, c4 = model.backbone(frames.flatten(0, 1))
    _c = head.fuse([c1, c2, c3, c4])
    h, w = _c.shape[-2:]
    x = head.linear_pred(_c).reshape(b, t, -1, h, w)
    split = lambda f: f.reshape(b, t, *f.shape[1:])  # noqa: E731
    c2s, c3s, c4s = split(c2), split(c3), split(c4)
    ref_keys = head.hypercorre_module.reference_keys(head.sr2(c2s[:, :-1].flatten(0, 1)),
                                                     head.sr3(c3s[:, :-1].flatten(0, 1)), c4s[:, :-1].flatten(0, 1))
    ref_keys = type(ref_keys)(*(k.reshape(b, t - 1, *k.shape[1:]) for k in ref_keys))
    aff = head.hypercorre_module(c2s[:, -1], c3s[:, -1], c4s[:, -1], ref_keys)
    atten = aff.logits.transpose(-2, -1).softmax(-1)  # official (B, 3, N8, s), softmax over s
    h2, w2 = int(h / 2), int(w / 2)
    _c2 = mm_resize(_c, (h2, w2))
    _c2_split = _c2.reshape(b, t, -1, h2, w2)
    _c3 = head.sr1_feat(_c2)
    _c3 = _c3.reshape(b, t, -1, _c3.shape[-2] * _c3.shape[-1]).transpose(-2, -1)
    further = _c3[:, :-1]
    further = further[aff.mask].reshape(b, t - 1, -1, further.shape[-1])
    supp = torch.matmul(atten, further).transpose(-2, -1).reshape(b, t - 1, -1, h2, w2)
    s = [supp[:, i] for i in range(t - 1)] + [_c2_split[:, -1]]
    outs = [mm_resize(head.deco1(s[0]), (h, w)), mm_resize(head.deco2(s[1]), (h, w)),
            mm_resize(head.deco3(s[2]), (h, w)), mm_resize(head.deco4((s[0] + s[1] + s[2]) / 3.0 + s[3]), (h, w))]
    size = labels.shape[-2:]
    ori = mm_resize(x.reshape(b * t, -1, h, w), size)
    last = mm_resize(torch.stack(outs, 1).reshape(b * 4, -1, h, w), size)
    label_ori = labels.reshape(b * t, *size).long()
    label_last = labels[:, -1:].expand(b, 4, *size).reshape(b * 4, *size).long()

    def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if all_pixel_mean:
            return torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none").mean()
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=255)

    return 0.5 * ce(ori, label_ori) + ce(last, label_last)


@pytest.mark.parametrize("with_ignored", [False, True])
def test_training_loss_is_the_official_objective(with_ignored: bool) -> None:
    from vsegcli.train.losses import SegLoss, compute_loss

    torch.manual_seed(3)
    model = build_model("mrcfa-b0", num_classes=7).eval()  # eval: no dropout on either side
    with torch.no_grad():  # every decoder different and the values live
        for p in model.decode_head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(5)
    frames = torch.randn(2, 4, 3, 64, 96, generator=g)
    labels = torch.randint(0, 7, (2, 4, 64, 96), generator=g).to(torch.uint8)
    if with_ignored:  # vseg averages over labelled pixels (documented deviation), so compare that way
        labels[:, :, :10] = 255
        labels[:, 1] = 255  # a clip frame without ground truth
    with torch.no_grad():
        parts = compute_loss(model.forward_train(frames), labels.long(), SegLoss())
        official = _official_training_loss(model, frames, labels, all_pixel_mean=not with_ignored)
    torch.testing.assert_close(parts["loss"], official, rtol=1e-5, atol=1e-6)
    assert set(parts) == {"main", "aux", "frame", "loss"}


def test_forward_train_gives_the_four_decoder_outputs_and_grads_reach_them() -> None:
    torch.manual_seed(0)
    model = build_model("mrcfa-effl0", 5, dilation=[-3, -2, -1]).train()
    out = model.forward_train(torch.randn(2, 4, 3, 64, 96))
    assert out["logits"].shape == (2, 5, 8, 12) and len(out["aux"]) == 3 and out["main_weight"] == 0.25
    assert all(w == 0.25 and a.shape == out["logits"].shape for a, w in out["aux"])
    assert out["frame_logits"].shape == (8, 5, 8, 12) and out["frame_weight"] == 0.5
    (out["logits"].sum() + sum(a.sum() for a, _ in out["aux"])).backward()
    for deco in model.decode_head.decoders():
        assert deco.smalldecoder[1].weight.grad is not None and deco.smalldecoder[1].weight.grad.abs().sum() > 0


def test_checkpoint_without_training_only_decoders_still_loads() -> None:
    """The shipped mrcfa-effl0 weights predate deco1..3: they load (nothing dropped, nothing
    missing reported) with deco1..3 started as copies of the trained deco4."""
    from vsegcli.checkpoints import load_checkpoint

    path = Path(__file__).resolve().parents[1] / "weights" / "mrcfa-effl0-camvid.safetensors"
    assert path.is_file(), f"shipped weights missing: {path}"
    loaded = load_checkpoint(path)
    head = loaded.model.decode_head
    assert loaded.ignored_keys == []
    for deco in head.decoders()[:3]:
        assert all(torch.equal(a, b) for a, b in zip(deco.state_dict().values(), head.deco4.state_dict().values()))


# ----------------------------------------------------------------------------------------------
# Precision and token counts
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_affinities_are_float32_under_autocast(dtype: torch.dtype) -> None:
    """Issue 16: MRCFA's unscaled affinities overflow fp16 on large features. Under CPU autocast the
    whole affinity module runs in float32: its output is float32, finite, and equal to the fp32
    run on the same inputs (the guarantee: autocast changes nothing inside the module)."""
    torch.manual_seed(0)
    module = HyperCorrelation([32, 64, 160, 256], hpn_units=1, keep_ratio=0.8).eval()
    c2, c3, c4 = (torch.randn(1, c, h, w) * 100 for c, h, w in ((64, 4, 6), (160, 2, 3), (256, 1, 2)))
    refs = [(torch.randn(1, 64, 1, 2) * 100, torch.randn(1, 160, 1, 2) * 100, torch.randn(1, 256, 1, 2) * 100)
            for _ in range(3)]
    with torch.no_grad():
        keys = [module.reference_keys(*r) for r in refs]
        stacked = type(keys[0])(*(torch.stack(p, 1) for p in zip(*keys)))
        want = module(c2, c3, c4, stacked)
        # The inputs are large enough: the stride-32 affinities leave fp16's range.
        top = (stacked.k3 @ module.q3(c4.flatten(2).transpose(1, 2)).unsqueeze(1).transpose(-2, -1)).abs().max()
        assert float(top) > 65504
        with torch.autocast("cpu", dtype=dtype):
            keys_ac = [module.reference_keys(*r) for r in refs]
            stacked_ac = type(keys_ac[0])(*(torch.stack(p, 1) for p in zip(*keys_ac)))
            got = module(c2.to(dtype), c3.to(dtype), c4.to(dtype), stacked_ac)
    assert all(k.dtype == torch.float32 for k in stacked_ac)
    assert got.logits.dtype == torch.float32 and bool(torch.isfinite(got.logits).all())
    # Same inputs up to their cast to `dtype`: compare the fp32 module on the cast inputs.
    with torch.no_grad():
        ref = module(c2.to(dtype).float(), c3.to(dtype).float(), c4.to(dtype).float(), stacked)
    assert torch.equal(got.logits, ref.logits) and torch.equal(got.mask, ref.mask)
    assert torch.isfinite(want.logits).all()


def test_whole_model_stays_finite_under_fp16_autocast() -> None:
    torch.manual_seed(0)
    model = build_model("mrcfa-effl0", 5, dilation=[-3, -2, -1]).eval()
    frames = torch.rand(1, 4, 3, 64, 96) * 40  # large activations
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = model.clip_outputs(frames)
    assert bool(torch.isfinite(out.logits).all())


def test_kept_tokens_truncate_like_upstream() -> None:
    """int(N·ratio), not round: a 2x6 stride-32 grid (64x192 frames) has N = 12; B0 keeps 0.8 ->
    9.6 -> 9 tokens (round would keep 10); effl0 keeps 0.5 of a 3x5 grid: 7.5 -> 7 (round: 8)."""
    torch.manual_seed(0)
    b0 = build_model("mrcfa-b0", 7).eval()
    with torch.no_grad():
        mask = b0.clip_outputs(torch.randn(1, 4, 3, 64, 192)).topk_mask
    assert mask.shape == (1, 3, 12) and mask.sum(-1).tolist() == [[9, 9, 9]]
    effl0 = build_model("mrcfa-effl0", 7).eval()
    with torch.no_grad():
        mask = effl0.clip_outputs(torch.randn(1, 4, 3, 96, 160)).topk_mask
    assert mask.shape == (1, 3, 15) and mask.sum(-1).tolist() == [[7, 7, 7]]
