"""The Sparse Temporal Transformer (STT; Li et al., ACM MM 2021), between a per-frame encoder and head.

What the paper specifies (implemented as stated):

* Queries come from the current frame, keys and values from the T earlier frames:
  Q = Wq·X_t, K_j = Wk·X_{t-j}, V_j = Wv·X_{t-j} (1x1 convs; single head; d_k = `key_dim`).
* Query selection. For each position p, with Qn the (2r+1)^2 query vectors around p and q = Q(p):
      D_NSM(p) = KL(U || softmax(Qn·q^T)) + mean_i (1 - cos(Qn_i, q)).
  Only the `query_ratio` fraction of positions with the largest D_NSM attend (default 50 %, r=5).
* Key selection. Key frame j steps back (j=1: previous frame) is searched in a (2l_j+1)^2 window
  centred on the query position, l_j = min(s + (j-1)·eps, e) (the paper's l_t = s + (T-t)·eps
  capped at e, key frame t of T); defaults s=1, e=5, eps=1 -> radii 1, 2, 3 for T=3.

Where the paper is silent (TDNet-like choices, documented here):

* Neighbourhood at image borders: valid-only. Out-of-image neighbours are left out of the
  softmax, the uniform distribution and the cosine mean (n = number of in-image neighbours), so
  border positions are not pushed up or down by padding. The neighbourhood includes p itself.
  Dot products in the NSM softmax are not scaled (the formula has no 1/sqrt(d)).
* Attention: one softmax over the windows of all available key frames together, scaled by
  1/sqrt(d_k); out-of-image window positions are masked. No positional encoding, no FFN, no
  dropout, single head (TDNet's attention has none of these either, except dropout).
* d_v = C by default (`value_dim`), like TDNet's d_model-wide value projection.
* Fusion: residual, X'(p) = X(p) + Wo·attended(p) at selected positions, unselected positions
  are returned unchanged. No LayerNorm (TDNet's LayerNorm over a fixed H×W cannot follow a
  change of input size). Wo (1x1 conv d_v -> C) starts at zero, so a fresh STT is exactly the
  per-frame base: a per-frame checkpoint fine-tunes into a temporal one from its own accuracy.
* Fewer than T earlier frames (video start): attend to what exists; none -> X unchanged.
* Query selection uses `topk` (not differentiable; gradients reach Wq through the attention).

Cost grows with (selected queries) x (keys per window) only; nothing of size H·W x H·W exists.
NSM scores are computed on row bands of an `unfold` of the (2r+1)^2 neighbourhood, keys and
values are gathered for the selected queries with flat-index arithmetic, both chunked so no
intermediate exceeds `chunk_elements` (default 2^24, 64 MB in float32) beyond the linear-size
maps themselves (dense attention at a 128x256 feature map with T=3 would need a 32768 x 98304
logits matrix, 12.9 GB).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vsegcli.errors import VsegError

KeyValue = tuple[torch.Tensor, torch.Tensor]  # K (B, H, W, d_k), V (B, H, W, d_v): channels last


class SparseTemporalTransformer(nn.Module):
    """`stt(x, memory)`: x (B, C, H, W) the current frame's feature, memory the cached
    `keys_values` of up to T earlier frames, nearest first -> updated feature, same shape."""

    def __init__(self, channels: int, num_frames: int = 3, key_dim: int = 64, value_dim: int | None = None,
                 radius: int = 5, query_ratio: float = 0.5, s: int = 1, e: int = 5, eps: int = 1,
                 zero_init: bool = True, chunk_elements: int = 1 << 24) -> None:
        super().__init__()
        _check_options(num_frames, key_dim, radius, query_ratio, s, e, eps)
        self.channels = channels
        self.num_frames = num_frames
        self.key_dim = key_dim
        self.value_dim = value_dim or channels
        self.radius = radius
        self.query_ratio = query_ratio
        self.s, self.e, self.eps = s, e, eps
        self.chunk_elements = chunk_elements
        self.query = nn.Conv2d(channels, key_dim, 1)
        self.key = nn.Conv2d(channels, key_dim, 1)
        self.value = nn.Conv2d(channels, self.value_dim, 1)
        self.out = nn.Conv2d(self.value_dim, channels, 1)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    # -- pieces ------------------------------------------------------------------------------
    def window_radius(self, distance: int) -> int:
        """Key-window radius for the key frame `distance` steps back (1 = previous frame)."""
        return min(self.s + (distance - 1) * self.eps, self.e)

    def keys_values(self, x: torch.Tensor) -> KeyValue:
        """K and V of one frame's feature (B, C, H, W); they depend on that frame only, so a
        streaming session computes them once, when the frame is current, and caches them."""
        return self.key(x).permute(0, 2, 3, 1).contiguous(), self.value(x).permute(0, 2, 3, 1).contiguous()

    def num_selected(self, h: int, w: int) -> int:
        return min(h * w, max(1, round(self.query_ratio * h * w)))

    def nsm_scores(self, q: torch.Tensor) -> torch.Tensor:
        """D_NSM (B, H, W) of query map q (B, d, H, W), over valid (in-image) neighbours.

        Computed in float32 even under autocast: the scores only rank positions, and bf16
        rounding would turn close scores into ties."""
        if q.device.type not in ("cpu", "cuda"):  # e.g. meta (shape checks): no autocast there
            return self._nsm_scores(q.float())
        with torch.autocast(q.device.type, enabled=False):
            return self._nsm_scores(q.float())

    def _nsm_scores(self, q: torch.Tensor) -> torch.Tensor:
        b, d, h, w = q.shape
        r = self.radius
        k = 2 * r + 1
        n = k * k
        q_pad = F.pad(q, (r, r, r, r))
        norm = q.norm(dim=1, keepdim=True)
        norm_pad = F.pad(norm, (r, r, r, r))
        valid_pad = F.pad(q.new_ones(1, 1, h, w), (r, r, r, r))
        rows = max(1, self.chunk_elements // max(1, b * d * n * w))  # band height bounded by the budget
        out = []
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            band = slice(y0, y1 + 2 * r)
            length = (y1 - y0) * w
            neigh = F.unfold(q_pad[:, :, band], k).view(b, d, n, length)
            centre = q[:, :, y0:y1].reshape(b, d, length)
            dots = torch.einsum("bdnl,bdl->bnl", neigh, centre)
            neigh_norm = F.unfold(norm_pad[:, :, band], k).view(b, n, length)
            valid = F.unfold(valid_pad[:, :, band], k).view(1, n, length) > 0.5
            count = valid.sum(1).to(q.dtype)  # (1, L)
            # KL(U || softmax(s)) = logsumexp(s) - mean(s) - log n, over the valid neighbours only.
            lse = dots.masked_fill(~valid, float("-inf")).logsumexp(1)
            kl = lse - (dots * valid).sum(1) / count - count.log()
            centre_norm = norm[:, :, y0:y1].reshape(b, 1, length)
            cos = dots / (neigh_norm * centre_norm).clamp_min(1e-8)
            dissim = ((1.0 - cos) * valid).sum(1) / count
            out.append((kl + dissim).view(b, y1 - y0, w))
        return torch.cat(out, dim=1)

    def select_queries(self, scores: torch.Tensor) -> torch.Tensor:
        """Flat indices (B, k) of the positions with the largest D_NSM, k = ratio·H·W."""
        b, h, w = scores.shape
        return scores.reshape(b, h * w).topk(self.num_selected(h, w), dim=1).indices

    def attend(self, q_sel: torch.Tensor, index: torch.Tensor, memory: Sequence[KeyValue],
               size: tuple[int, int]) -> torch.Tensor:
        """Windowed attention of selected queries q_sel (B, k, d_k) at flat positions `index`
        (B, k) over the key frames in `memory` (nearest first) -> attended values (B, k, d_v)."""
        h, w = size
        b, nq, dk = q_sel.shape
        device = q_sel.device
        # Window offsets of every key frame, concatenated: frame id, dy, dx per key slot.
        frame_ids, dys, dxs = [], [], []
        for j in range(len(memory)):
            l = self.window_radius(j + 1)
            rng = torch.arange(-l, l + 1, device=device)
            dy, dx = torch.meshgrid(rng, rng, indexing="ij")
            frame_ids.append(torch.full((dy.numel(),), j, device=device))
            dys.append(dy.reshape(-1))
            dxs.append(dx.reshape(-1))
        frame_id, dy, dx = torch.cat(frame_ids), torch.cat(dys), torch.cat(dxs)
        n_keys = frame_id.numel()
        t = len(memory)
        # Flat tables (B·T·H·W, d): row ((b·T + j)·H + y)·W + x.
        keys = torch.stack([kv[0] for kv in memory], dim=1).reshape(b * t * h * w, dk)
        values = torch.stack([kv[1] for kv in memory], dim=1).reshape(b * t * h * w, -1)
        base = (torch.arange(b, device=device) * t).view(b, 1, 1) + frame_id.view(1, 1, -1)
        scale = 1.0 / math.sqrt(dk)
        chunk = max(1, self.chunk_elements // max(1, b * n_keys * max(dk, values.shape[1])))
        out = []
        for c0 in range(0, nq, chunk):
            idx = index[:, c0:c0 + chunk]
            y = (idx // w).unsqueeze(-1) + dy  # (B, k, K)
            x = (idx % w).unsqueeze(-1) + dx
            inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            flat = ((base * h + y.clamp(0, h - 1)) * w + x.clamp(0, w - 1)).reshape(-1)
            k_win = keys.index_select(0, flat).view(*y.shape, dk)
            logits = torch.einsum("bqd,bqkd->bqk", q_sel[:, c0:c0 + chunk], k_win) * scale
            attn = logits.masked_fill(~inside, float("-inf")).softmax(-1)  # window centre is always inside
            v_win = values.index_select(0, flat).view(*y.shape, -1)
            out.append(torch.einsum("bqk,bqkd->bqd", attn, v_win))
        return torch.cat(out, dim=1)

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, memory: Sequence[KeyValue]) -> torch.Tensor:
        """X_t (B, C, H, W) + cached K/V of up to T earlier frames (nearest first) -> X_t'."""
        memory = list(memory)[: self.num_frames]
        if not memory:
            return x
        b, c, h, w = x.shape
        for k, v in memory:
            if k.shape[:3] != (b, h, w):
                raise VsegError(
                    f"STT key frame is {tuple(k.shape[:3])} but the current frame is {(b, h, w)}: "
                    "frame size or batch changed mid-video; start a new session"
                )
        q = self.query(x)
        index = self.select_queries(self.nsm_scores(q))  # (B, k)
        q_sel = q.flatten(2).gather(2, index.unsqueeze(1).expand(b, q.shape[1], -1)).transpose(1, 2)
        attended = self.attend(q_sel, index, memory, (h, w))
        delta = F.linear(attended, self.out.weight.flatten(1), self.out.bias)  # Wo as a linear map
        # Residual update at the selected positions only; the rest keep X_t unchanged.
        updated = x.flatten(2).scatter_add(2, index.unsqueeze(1).expand(b, c, -1), delta.transpose(1, 2))
        return updated.view(b, c, h, w)


def _check_options(num_frames: int, key_dim: int, radius: int, query_ratio: float, s: int, e: int,
                   eps: int) -> None:
    problems = []
    if num_frames < 1:
        problems.append(f"num_frames must be >= 1 (got {num_frames})")
    if key_dim < 1:
        problems.append(f"key_dim must be >= 1 (got {key_dim})")
    if radius < 0:
        problems.append(f"radius must be >= 0 (got {radius})")
    if not 0.0 < query_ratio <= 1.0:
        problems.append(f"query_ratio must be in (0, 1] (got {query_ratio})")
    if s < 0 or e < s or eps < 0:
        problems.append(f"window radii need 0 <= s <= e and eps >= 0 (got s={s}, e={e}, eps={eps})")
    for name, value in (("num_frames", num_frames), ("radius", radius), ("s", s), ("e", e), ("eps", eps)):
        if int(value) != value:
            problems.append(f"{name} must be an integer (got {value})")
    if problems:
        raise VsegError("invalid STT options: " + "; ".join(problems))
