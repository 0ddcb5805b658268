"""STT: the sparse module against an independent dense masked reference, its cost, and the
temporal families (clip == stream, one backbone pass per frame, per-frame weights carry over)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from vsegcli.errors import VsegError
from vsegcli.models import build_model, get_architecture, list_architectures
from vsegcli.models.temporal.sparse_attention import SparseTemporalTransformer


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# Independent reference: brute-force NSM + dense attention over all T·H·W keys with a window mask.
# ----------------------------------------------------------------------------------------------
def brute_nsm(q: torch.Tensor, r: int) -> torch.Tensor:
    """D_NSM per position, looping over positions; neighbours restricted to the image."""
    b, d, h, w = q.shape
    out = torch.empty(b, h, w, dtype=torch.float64)
    q = q.double()
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                centre = q[bi, :, y, x]
                ys = range(max(0, y - r), min(h, y + r + 1))
                xs = range(max(0, x - r), min(w, x + r + 1))
                neigh = torch.stack([q[bi, :, yy, xx] for yy in ys for xx in xs])  # (n, d)
                n = neigh.shape[0]
                log_p = torch.log_softmax(neigh @ centre, dim=0)
                kl = (1.0 / n * (math.log(1.0 / n) - log_p)).sum()  # KL(U || p)
                cos = F.cosine_similarity(neigh, centre.expand_as(neigh), dim=1, eps=1e-12)
                out[bi, y, x] = kl + (1.0 - cos).mean()
    return out


def dense_reference(stt: SparseTemporalTransformer, x: torch.Tensor, previous: list[torch.Tensor]) -> torch.Tensor:
    """`previous`: features of earlier frames, nearest first. Dense attention, masked to windows."""
    if not previous:
        return x
    b, c, h, w = x.shape
    n = h * w
    q = stt.query(x)
    scores = brute_nsm(q, stt.radius).reshape(b, n)
    k_sel = max(1, round(stt.query_ratio * n))
    selected = torch.zeros(b, n, dtype=torch.bool)
    selected.scatter_(1, scores.topk(k_sel, dim=1).indices, True)

    ys = torch.arange(h).repeat_interleave(w)
    xs = torch.arange(w).repeat(h)
    keys, values, masks = [], [], []
    for j, feat in enumerate(previous, start=1):
        radius = min(stt.s + (j - 1) * stt.eps, stt.e)
        keys.append(stt.key(feat).flatten(2).transpose(1, 2))  # (B, N, dk)
        values.append(stt.value(feat).flatten(2).transpose(1, 2))
        near = ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)
        masks.append(near)  # (N queries, N keys of this frame)
    keys, values, mask = torch.cat(keys, 1), torch.cat(values, 1), torch.cat(masks, 1)
    qs = q.flatten(2).transpose(1, 2)
    logits = qs @ keys.transpose(1, 2) / math.sqrt(stt.key_dim)  # (B, N, T·N): dense on purpose
    attended = logits.masked_fill(~mask, float("-inf")).softmax(-1) @ values
    delta = attended @ stt.out.weight.flatten(1).T + stt.out.bias
    out = x.flatten(2).transpose(1, 2) + delta * selected.unsqueeze(-1)
    return out.transpose(1, 2).reshape(b, c, h, w)


def make_stt(channels: int = 8, **options) -> SparseTemporalTransformer:
    stt = SparseTemporalTransformer(channels, **options)
    torch.nn.init.normal_(stt.out.weight, std=0.3)  # non-zero so the attention shows in the output
    torch.nn.init.normal_(stt.out.bias, std=0.1)
    return stt.eval()


def run_sparse(stt: SparseTemporalTransformer, x: torch.Tensor, previous: list[torch.Tensor]) -> torch.Tensor:
    return stt(x, [stt.keys_values(f) for f in previous])


# ----------------------------------------------------------------------------------------------
# The module
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("radius,size", [(2, (7, 9)), (5, (6, 13))])
def test_nsm_matches_brute_force(radius: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    stt = make_stt(radius=radius, key_dim=6)
    q = torch.randn(2, 6, *size)
    torch.testing.assert_close(stt.nsm_scores(q).double(), brute_nsm(q, radius), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "options,frames,batch",
    [
        (dict(num_frames=3, radius=2, s=1, e=2, eps=1, key_dim=6, value_dim=5), 3, 1),  # radii 1, 2, 2 (cap)
        (dict(num_frames=3, radius=5, key_dim=4), 2, 2),  # video start: 2 of 3 frames, batch 2
        (dict(num_frames=2, radius=1, query_ratio=1.0, s=0, e=3, eps=2, key_dim=4), 2, 1),  # radii 0, 2
    ],
)
def test_sparse_equals_dense_masked_reference(options: dict, frames: int, batch: int) -> None:
    torch.manual_seed(1)
    stt = make_stt(8, **options)
    x = torch.randn(batch, 8, 7, 10)
    previous = [torch.randn(batch, 8, 7, 10) for _ in range(frames)]
    with torch.no_grad():
        torch.testing.assert_close(run_sparse(stt, x, previous), dense_reference(stt, x, previous),
                                   rtol=1e-5, atol=1e-5)


def test_unselected_positions_unchanged_and_ratio() -> None:
    torch.manual_seed(2)
    stt = make_stt(8, radius=2, key_dim=4)
    x = torch.randn(1, 8, 6, 8)
    with torch.no_grad():
        y = run_sparse(stt, x, [torch.randn(1, 8, 6, 8)])
    changed = (y != x).any(dim=1)
    assert int(changed.sum()) == stt.num_selected(6, 8) == 24


def test_chunking_does_not_change_the_result() -> None:
    torch.manual_seed(3)
    big, tiny = make_stt(8, key_dim=4), make_stt(8, key_dim=4, chunk_elements=64)
    tiny.load_state_dict(big.state_dict())
    x = torch.randn(1, 8, 9, 11)
    previous = [torch.randn(1, 8, 9, 11) for _ in range(3)]
    with torch.no_grad():
        torch.testing.assert_close(run_sparse(tiny, x, previous), run_sparse(big, x, previous), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,radius", [((2, 6, 9, 13), 2), ((1, 5, 4, 5), 5), ((1, 7, 12, 10), 0),
                                          ((2, 4, 17, 8), 3)])
def test_sparse_nsm_matches_the_unfold_formula(shape: tuple[int, ...], radius: int) -> None:
    # The CPU path (sampled dots, cosine mean from a box sum) against the term-by-term formula,
    # in one band and in one-row bands; a zero query vector has cosine 0 in both.
    torch.manual_seed(7)
    q = torch.randn(*shape)
    q[0, :, 1, 2] = 0.0
    stt = make_stt(radius=radius, key_dim=shape[1])
    reference = stt._nsm_scores_unfold(q)
    torch.testing.assert_close(stt.nsm_scores(q), reference, rtol=1e-5, atol=1e-5)
    stt.work_elements, stt.chunk_elements = 1, 64
    torch.testing.assert_close(stt.nsm_scores(q), reference, rtol=1e-5, atol=1e-5)
    index = stt.select_queries(stt.nsm_scores(q))
    if radius > 0:  # with r = 0 every score is 0 (up to rounding): the selection is arbitrary
        assert torch.equal(index, reference.flatten(1).topk(index.shape[1], dim=1).indices.sort(dim=1).values)
    assert bool((index[:, 1:] > index[:, :-1]).all())  # raster order, as the sparse attention wants


@pytest.mark.parametrize("work_elements", [1 << 18, 1])  # one band per image / one row per band
def test_sparse_attention_matches_gather_path_with_gradients(work_elements: int) -> None:
    torch.manual_seed(8)
    stt = make_stt(8, key_dim=6, value_dim=5, radius=2).train()
    stt.work_elements = work_elements
    x = torch.randn(2, 8, 9, 13, requires_grad=True)
    previous = [torch.randn(2, 8, 9, 13, requires_grad=True) for _ in range(3)]
    inputs = [x, *previous, *stt.parameters()]

    def outputs(fast_devices: tuple[str, ...]) -> list[torch.Tensor]:
        stt.fast_devices = fast_devices
        y = run_sparse(stt, x, previous)
        weights = torch.linspace(-1.0, 1.0, y.numel()).view_as(y)
        return [y, *torch.autograd.grad((y * weights).sum(), inputs)]

    for fast, reference in zip(outputs(("cpu",)), outputs(())):
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    # `attend` also takes queries in any order (it sorts them into bands and back).
    with torch.no_grad():
        memory = [stt.keys_values(f) for f in previous]
        index = torch.stack([torch.randperm(117)[:40] for _ in range(2)])
        q_sel = torch.randn(2, 40, 6)
        torch.testing.assert_close(stt._attend_sparse(q_sel, index, memory, (9, 13)),
                                   stt._attend_gather(q_sel, index, memory, (9, 13)), rtol=1e-5, atol=1e-5)


class PeakNumel(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.peak = max(self.peak, t.numel())
        return out


def test_cost_never_scales_with_hw_squared() -> None:
    # 128x256 feature map (1/8 of 1024x2048), T=3: dense logits alone would be 3·32768² ≈ 3.2e9
    # floats (12.9 GB). The sparse module must stay within its chunk budget / linear maps.
    torch.manual_seed(4)
    c, h, w, budget = 16, 128, 256, 1 << 20
    stt = make_stt(c, key_dim=8, chunk_elements=budget)
    x = torch.randn(1, c, h, w)
    previous = [torch.randn(1, c, h, w) for _ in range(3)]
    with torch.no_grad():
        memory = [stt.keys_values(f) for f in previous]
        with PeakNumel() as probe:
            y = stt(x, memory)
    hw = h * w
    linear = 4 * hw * c  # T+1 maps of C channels
    assert probe.peak <= max(budget, linear), probe.peak
    assert probe.peak * 1000 < 3 * hw * hw  # >1000x below the dense logits tensor
    assert int((y != x).any(1).sum()) == hw // 2


def test_zero_initialised_stt_is_identity_and_options_are_checked() -> None:
    stt = SparseTemporalTransformer(8).eval()
    x = torch.randn(1, 8, 5, 6)
    with torch.no_grad():
        assert torch.equal(stt(x, [stt.keys_values(torch.randn(1, 8, 5, 6))]), x)
    assert [stt.window_radius(j) for j in range(1, 8)] == [1, 2, 3, 4, 5, 5, 5]
    with pytest.raises(VsegError):
        SparseTemporalTransformer(8, query_ratio=0.0)
    with pytest.raises(VsegError):
        SparseTemporalTransformer(8, s=3, e=2)


# ----------------------------------------------------------------------------------------------
# Temporal families
# ----------------------------------------------------------------------------------------------
STT_NAMES = [
    "stt-bisenet-r18", "stt-bisenet-r34", "stt-pspnet-r18", "stt-pspnet-r50", "stt-pspnet-r101",
    *(f"stt-segformer-b{i}" for i in range(6)), "stt-effl0",
]


def test_registry_lists_every_stt_family_with_its_baseline() -> None:
    names = {a.name for a in list_architectures()}
    assert set(STT_NAMES) <= names
    for name in STT_NAMES:
        arch = get_architecture(name)
        assert arch.temporal and arch.baseline in names and not get_architecture(arch.baseline).temporal
        for option in ("num_frames", "radius", "query_ratio", "s", "e", "eps", "key_dim"):
            assert option in arch.defaults
        # The paper's configuration: T = 7 key frames (its key-size table holds only for T = 7).
        assert (arch.defaults["num_frames"], arch.defaults["radius"], arch.defaults["query_ratio"]) == (7, 5, 0.5)
        assert (arch.defaults["s"], arch.defaults["e"], arch.defaults["eps"]) == (1, 5, 1)


@pytest.mark.parametrize("name", STT_NAMES)
def test_temporal_model_is_base_plus_stt(name: str) -> None:
    # Meta device: shapes and key names without allocating or computing (r101/b5 stay cheap).
    with torch.device("meta"):
        model = build_model(name, 7).eval()
        base = build_model(get_architecture(name).baseline, 7)
        out = model.forward_clip(torch.empty(2, 4, 3, 64, 96))
    s = model.output_stride
    assert tuple(out.shape) == (2, 7, 64 // s, 96 // s)
    assert model.output_stride == base.output_stride
    own, base_keys = set(model.state_dict()), set(base.state_dict())
    assert base_keys <= own
    assert own - base_keys and all(k.startswith("stt.") for k in own - base_keys)


def _randomise_stt(model: torch.nn.Module) -> None:
    torch.nn.init.normal_(model.stt.out.weight, std=0.2)


def _calibrate_bn(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Give BatchNorm real statistics. With default running stats a random network saturates
    (ReLU6 clips everything to 6), its features are spatially constant, and the NSM scores of
    all positions tie at 0 up to rounding, which makes the query selection arbitrary."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    with torch.no_grad():
        model.train().forward_frame(images)
    model.eval()


@pytest.mark.parametrize("name", ["stt-effl0", "stt-pspnet-r18", "stt-segformer-b0"])
def test_session_equals_forward_clip(name: str) -> None:
    torch.manual_seed(5)
    model = build_model(name, 5)
    _randomise_stt(model)
    frames = torch.randn(1, 12, 3, 64, 96)
    _calibrate_bn(model, frames[0, :6])
    t = model.stt.num_frames
    session = model.new_session()
    with torch.no_grad():
        for i in range(12):
            streamed = session.step(frames[:, i])
            clip = model.forward_clip(frames[:, max(0, i - t): i + 1])
            torch.testing.assert_close(streamed, clip, rtol=1e-5, atol=1e-5)
        # A longer clip uses only its last T+1 frames.
        torch.testing.assert_close(model.forward_clip(frames), model.forward_clip(frames[:, -t - 1:]))


def test_session_runs_each_backbone_once_per_frame() -> None:
    model = build_model("stt-effl0", 5).eval()
    calls = []
    model.backbone.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    session = model.new_session()
    n = model.stt.num_frames + 2  # past the ring buffer's capacity
    with torch.no_grad():
        for _ in range(n):
            session.step(torch.randn(1, 3, 64, 96))
    assert calls == [1] * n
    assert len(session.memory) == model.stt.num_frames
    assert all(k.shape[-1] == model.stt.key_dim for k, _ in session.memory)  # cached K/V, not features
    session.reset()
    assert not session.memory and session.frame_index == 0


@pytest.mark.parametrize("name", ["stt-pspnet-r18", "stt-bisenet-r18"])
def test_fresh_stt_reproduces_its_per_frame_checkpoint(name: str) -> None:
    torch.manual_seed(6)
    base = build_model(get_architecture(name).baseline, 5)
    clip = torch.randn(1, 4, 3, 64, 96)
    _calibrate_bn(base, clip[0])
    model = build_model(name, 5).eval()
    result = model.load_state_dict(base.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith("stt.") for k in result.missing_keys)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_clip(clip), base.forward_frame(clip[:, -1]), rtol=1e-5, atol=1e-5)
        assert torch.equal(model.forward_clip(clip[:, -1:]), model.forward_frame(clip[:, -1]))


def test_training_clip_keeps_aux_logits_for_the_target_only() -> None:
    model = build_model("stt-pspnet-r18", 5).train()
    logits = model.forward_clip(torch.randn(2, 3, 3, 64, 96))
    assert logits.shape == (2, 5, 8, 12)
    assert [tuple(a.shape) for a in model.aux_logits] == [(2, 5, 8, 12)]
    logits.mean().backward()
    assert model.stt.out.weight.grad is not None and model.stt.out.weight.grad.abs().sum() > 0


def _two_shots(seed: int, n: int, h: int = 64, w: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unrelated 'shots' of n frames each: slowly drifting content, different per shot."""
    g = torch.Generator().manual_seed(seed)
    shots = []
    for offset in (0.0, 1.5):
        base = torch.randn(1, 3, h, w, generator=g) + offset
        shots.append(torch.stack([base + 0.1 * i * torch.randn(1, 3, h, w, generator=g) for i in range(n)], 1))
    return shots[0], shots[1]


@pytest.mark.parametrize("name", ["stt-effl0", "effl0"])
def test_reset_at_a_cut_equals_a_fresh_session(name: str) -> None:
    """Session.reset() (what the runtime calls at a shot cut): after shot A then reset, shot B's
    logits equal, to the bit, a fresh session's on shot B alone, for step and step_many; and
    without the reset the STT output after the cut differs (the cached frames do matter)."""
    torch.manual_seed(7)
    model = build_model(name, 5, **({"num_frames": 3} if name.startswith("stt") else {}))
    shot_a, shot_b = _two_shots(11, 4)
    _calibrate_bn(model, shot_a[0])
    if model.temporal:
        _randomise_stt(model)
    with torch.no_grad():
        fresh = model.new_session()
        want = [fresh.step(shot_b[:, i]) for i in range(4)]
        session = model.new_session()
        for i in range(4):
            session.step(shot_a[:, i])
        stale = session.step(shot_b[:, 0])
        session.reset()
        got = [session.step(shot_b[:, i]) for i in range(4)]
        for i in range(4):
            assert torch.equal(got[i], want[i]), i
        if model.temporal:
            assert (stale - want[0]).abs().max() > 1e-3
        # step_many after a reset equals step_many of a fresh session.
        session.reset()
        assert torch.equal(session.step_many(shot_b[0]), model.new_session().step_many(shot_b[0]))


# The paper's key-selection ablation (Li et al., ACM MM 2021): keys per query for each (s, e, eps).
PAPER_KEY_SIZES = [
    (dict(s=1, e=5, eps=1), 527), (dict(s=2, e=5, eps=1), 639), (dict(s=3, e=5, eps=1), 735),
    (dict(s=1, e=3, eps=1), 279), (dict(s=1, e=7, eps=1), 679), (dict(s=1, e=5, eps=2), 663),
    (dict(s=1, e=5, eps=3), 695),
]


def _attended_keys(stt: SparseTemporalTransformer, size: int) -> int:
    """Keys one query at the centre of a size x size map really attends to: the positions of the
    T key maps its attended value has a non-zero gradient for (the attention code itself decides)."""
    torch.manual_seed(0)
    b, dk = 1, stt.key_dim
    memory = [(torch.randn(b, size, size, dk, dtype=torch.float64, requires_grad=True),
               torch.randn(b, size, size, 3, dtype=torch.float64)) for _ in range(stt.num_frames)]
    centre = (size // 2) * size + size // 2
    q = torch.randn(b, 1, dk, dtype=torch.float64)
    out = stt.attend(q, torch.tensor([[centre]]), memory, (size, size))
    out.sum().backward()
    return sum(int((k.grad.abs().sum(-1) > 0).sum()) for k, _ in memory)


@pytest.mark.parametrize("options,paper", PAPER_KEY_SIZES)
def test_default_t_reproduces_the_papers_key_sizes(options: dict, paper: int) -> None:
    """Every key size of the paper's ablation, from the model's own key selection at its default T:
    `keys_per_query` and the keys the attention actually reads (both paths) — 527 for the defaults."""
    model = build_model("stt-effl0", 11, **options)
    stt = model.stt
    assert stt.num_frames == 7  # the architecture default
    assert stt.keys_per_query() == paper
    size = 2 * stt.e + 3  # every window fits around the centre query
    assert _attended_keys(stt, size) == paper
    stt.fast_devices = ()  # the gather path (CUDA until verified there) selects the same keys
    assert _attended_keys(stt, size) == paper
    # Dense attention over T frames of a 64x128 feature map (stride 8 of 512x1024): 57,344 keys.
    assert stt.num_frames * 64 * 128 == 57_344
