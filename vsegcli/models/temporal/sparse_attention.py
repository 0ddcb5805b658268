"""The Sparse Temporal Transformer (STT; Li et al., ACM MM 2021), between a per-frame encoder and head.

What the paper specifies (implemented as stated):

* Queries come from the current frame, keys and values from the T earlier frames:
  Q = Wq·X_t, K_j = Wk·X_{t-j}, V_j = Wv·X_{t-j} (1x1 convs; single head; d_k = `key_dim`).
* Query selection. For each position p, with Qn the (2r+1)^2 query vectors around p and q = Q(p):
      D_NSM(p) = KL(U || softmax(Qn·q^T)) + mean_i (1 - cos(Qn_i, q)).
  Only the `query_ratio` fraction of positions with the largest D_NSM attend (default 50 %, r=5).
* Key selection. Key frame j steps back (j=1: previous frame) is searched in a (2l_j+1)^2 window
  centred on the query position, l_j = min(s + (j-1)·eps, e) (the paper's l_t = s + (T-t)·eps
  capped at e, key frame t of T); defaults s=1, e=5, eps=1, T=7 -> radii 1, 2, 3, 4, 5, 5, 5:
  527 keys per query (`keys_per_query`), the paper's configuration.

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

Cost grows with (selected queries) x (keys per window) only, besides the linear-size maps;
nothing of size H·W x H·W exists (dense attention at a 128x256 feature map with T=7 would need a
32768 x 229376 logits matrix, 30 GB in float32). Two implementations, equal up to float rounding:

* Sparse kernels (devices in `fast_devices`, CPU): nothing window-sized beyond logits. The NSM
  dots are a CSR sampled matrix product (SDDMM) at exactly the (2r+1)^2 neighbour positions of
  a zero-padded Q map; D_NSM = logsumexp_valid(s) - log n + 1 - (Σ s + q^·ΣQn^)/n, the cosine
  sum being a box sum of the unit map Q^ (the mean terms are linear in the neighbours). The
  attention logits are an SDDMM at the window positions of zero-padded K maps, and the values
  are summed by `embedding_bag` with the attention as per-sample weights, per key frame. Queries
  are processed in raster order, in row bands of cache-friendly size (`work_elements`).
* Reference (other devices; meta shape checks): NSM on row bands of an `unfold` of the
  neighbourhood, K and V windows gathered for the selected queries with flat-index arithmetic.
  The same kernels exist on CUDA (cuSPARSE SDDMM, embedding_bag) but are not verified there.

Either way no intermediate exceeds `chunk_elements` (default 2^24, 64 MB in float32; a CSR
pattern counts at its logical rows x columns) beyond the linear-size maps themselves.
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vsegcli.errors import VsegError
from vsegcli.models.temporal.precision import autocast_off

KeyValue = tuple[torch.Tensor, torch.Tensor]  # K (B, H, W, d_k), V (B, H, W, d_v): channels last


class SparseTemporalTransformer(nn.Module):
    """`stt(x, memory)`: x (B, C, H, W) the current frame's feature, memory the cached
    `keys_values` of up to T earlier frames, nearest first -> updated feature, same shape."""

    #: Devices that take the sparse kernels (CSR sampled matmul + embedding_bag), verified on CPU.
    #: Others (CUDA until checked there, meta) take the unfold / gather path: same results up to
    #: float rounding.
    fast_devices: tuple[str, ...] = ("cpu",)
    #: Target size of the per-band temporaries of the sparse path (elements): cache-sized bands
    #: measured fastest on CPU; much larger ones page-fault their fresh buffers on every call.
    work_elements: int = 1 << 18

    def __init__(self, channels: int, num_frames: int = 7, key_dim: int = 64, value_dim: int | None = None,
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

    def keys_per_query(self, num_key_frames: int | None = None) -> int:
        """Keys one (interior) query attends to over `num_key_frames` (default T) key frames:
        the sum of the (2l_j+1)^2 window sizes — the paper's "key size" (527 for its defaults)."""
        t = self.num_frames if num_key_frames is None else num_key_frames
        return sum((2 * self.window_radius(j) + 1) ** 2 for j in range(1, t + 1))

    def keys_values(self, x: torch.Tensor) -> KeyValue:
        """K and V of one frame's feature (B, C, H, W); they depend on that frame only, so a
        streaming session computes them once, when the frame is current, and caches them."""
        xc = x.permute(0, 2, 3, 1)  # channels-last view: the projections write (B, H, W, d) directly
        return _project(self.key, xc), _project(self.value, xc)

    def num_selected(self, h: int, w: int) -> int:
        return min(h * w, max(1, round(self.query_ratio * h * w)))

    def nsm_scores(self, q: torch.Tensor) -> torch.Tensor:
        """D_NSM (B, H, W) of query map q (B, d, H, W), over valid (in-image) neighbours.

        Computed in float32 even under autocast: the scores only rank positions, and bf16
        rounding would turn close scores into ties. No gradient: only the top-k indices are used."""
        q = q.detach()  # why: a graph through the scores would only cost memory in training
        if q.device.type not in ("cpu", "cuda"):  # e.g. meta (shape checks): no autocast there
            return self._nsm_scores_unfold(q.float())
        with torch.autocast(q.device.type, enabled=False):
            q = q.float()
            if q.device.type in self.fast_devices:
                return self._nsm_scores_sparse(q)
            return self._nsm_scores_unfold(q)

    def _nsm_scores_sparse(self, q: torch.Tensor) -> torch.Tensor:
        """D = logsumexp_valid(s) - log n + 1 - (Σ_valid s + q^·ΣQn^)/n, s_i = Qn_i·q, q^ = q/|q|.

        The dots s_i are computed at exactly the (2r+1)^2 neighbour positions of a zero-padded
        map by a sampled matrix product (out-of-image neighbours give exactly 0, so they drop out
        of Σ s and are masked for the log-sum-exp). The cosine mean is linear in the unit
        neighbours: a box sum of Q^ (zero padding = in-image only) dotted with q^."""
        b, d, h, w = q.shape
        r = self.radius
        k = 2 * r + 1
        wp = w + 2 * r
        qc = q.permute(0, 2, 3, 1)  # (B, H, W, d) view, channels last (contiguous from forward)
        table = F.pad(qc, (0, 0, r, r, r, r))  # zero-padded neighbour table (B, Hp, Wp, d)
        # Neighbour (oy, ox) in [0, 2r]^2 of band position (y, x) is band-table row
        # (y + oy)·Wp + x + ox: increasing in the offset and distinct -> a valid CSR row.
        offsets = (_arange(k, q).view(k, 1) * wp + _arange(k, q)).reshape(-1)
        # Out-of-image neighbours: the column offset or the row offset leaves the image.
        pos_x = _arange(w, q).view(w, 1) + _arange(k, q) - r
        bad_x = ((pos_x < 0) | (pos_x >= w)).view(1, w, 1, k)
        rows = min(_band_rows(h, w, r, self.chunk_elements), max(1, self.work_elements // (w * k * k)))
        lse = q.new_empty(b, h, w)
        dot_sum = q.new_empty(b, h, w)
        for bi in range(b):
            for y0 in range(0, h, rows):
                y1 = min(h, y0 + rows)
                corner = (_arange(y1 - y0, q).view(-1, 1) * wp + _arange(w, q)).view(-1, 1)
                dots = _sampled_dots(qc[bi, y0:y1].reshape(-1, d), corner + offsets,
                                     table[bi, y0:y1 + 2 * r].reshape(-1, d))
                dot_sum[bi, y0:y1] = dots.sum(1).view(y1 - y0, w)  # padding adds exact zeros
                grid = dots.view(y1 - y0, w, k, k)
                grid.masked_fill_(bad_x, float("-inf"))
                if y0 < r or y1 > h - r:  # only border bands have rows outside the image
                    pos_y = _arange(y1 - y0, q).view(-1, 1) + (y0 - r) + _arange(k, q)
                    grid.masked_fill_(((pos_y < 0) | (pos_y >= h)).view(-1, 1, k, 1), float("-inf"))
                # log-sum-exp in place (the centre |q|^2 is always valid, so the max is finite).
                top = dots.amax(1, keepdim=True)
                lse[bi, y0:y1] = (dots.sub_(top).exp_().sum(1).log_() + top.squeeze(1)).view(y1 - y0, w)
        unit = F.normalize(qc, dim=-1)  # a zero vector has cosine 0 to everything, as before
        cos_sum = (unit * _box_sum(unit, r)).sum(-1)  # q^·ΣQn^ over in-image neighbours
        count = _window_count(h, r, q).view(h, 1) * _window_count(w, r, q).view(1, w)  # n per position
        return lse - count.log() + 1.0 - (dot_sum + cos_sum) / count

    def _nsm_scores_unfold(self, q: torch.Tensor) -> torch.Tensor:
        """The formula term by term on an `unfold` of the neighbourhood, in row bands (devices
        without the sparse kernels; also the reference the sparse version is tested against)."""
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
        """Flat indices (B, k) of the positions with the largest D_NSM, k = ratio·H·W, in
        ascending (raster) order: neighbouring queries then read neighbouring keys and values."""
        b, h, w = scores.shape
        return scores.reshape(b, h * w).topk(self.num_selected(h, w), dim=1).indices.sort(dim=1).values

    def attend(self, q_sel: torch.Tensor, index: torch.Tensor, memory: Sequence[KeyValue],
               size: tuple[int, int]) -> torch.Tensor:
        """Windowed attention of selected queries q_sel (B, k, d_k) at flat positions `index`
        (B, k) over the key frames in `memory` (nearest first) -> attended values (B, k, d_v).

        Logits and softmax in float32 with autocast off on every device: q·k of d_k-dim vectors
        overflows fp16 (65,504) before any scaling. Values are summed in V's own dtype."""
        with autocast_off(q_sel.device):
            q_sel = q_sel.float()
            if q_sel.device.type in self.fast_devices:
                return self._attend_sparse(q_sel, index, memory, size)
            return self._attend_gather(q_sel, index, memory, size)

    def _attend_sparse(self, q_sel: torch.Tensor, index: torch.Tensor, memory: Sequence[KeyValue],
                       size: tuple[int, int]) -> torch.Tensor:
        """Logits by a sampled matrix product at the window positions of each zero-padded K map,
        values summed by `embedding_bag` weighted with the attention: no K or V window is ever
        materialised, only (queries x keys-per-window) logits and indices. Works on row bands of
        the (sorted) queries so that each band only addresses the K rows its windows reach."""
        h, w = size
        b, nq, dk = q_sel.shape
        if bool((index[:, 1:] < index[:, :-1]).any()):  # bands need raster order; select_queries gives it
            index, order = index.sort(dim=1)
            attended = self._attend_sparse(q_sel.gather(1, order.unsqueeze(-1).expand(-1, -1, dk)), index,
                                           memory, size)
            return attended.scatter(1, order.unsqueeze(-1).expand_as(attended), attended)
        radii = [self.window_radius(j + 1) for j in range(len(memory))]
        n_keys = self.keys_per_query(len(memory))
        dv = memory[0][1].shape[-1]
        scale = 1.0 / math.sqrt(dk)
        frames = []  # per key frame: radius, padded K, V table, window offsets, padded -> frame lookups
        for (keys, values), l in zip(memory, radii):
            k, wl = 2 * l + 1, w + 2 * l
            # Logits in float32 (as the softmax wants them anyway); K is narrow, the copy is cheap.
            padded = keys.new_zeros(b, h + 2 * l, wl, dk, dtype=torch.float32)
            padded[:, l:l + h, l:l + w] = keys
            rng = _arange(k, index)
            offsets = (rng.view(k, 1) * wl + rng).reshape(-1)
            # Padded position -> flat frame position (clamped: its weight is 0) and "outside" flag.
            py, px = _arange(h + 2 * l, index) - l, _arange(wl, index) - l
            lookup = (py.clamp(0, h - 1).view(-1, 1) * w + px.clamp(0, w - 1)).reshape(-1)
            outside = (((py < 0) | (py >= h)).view(-1, 1) | ((px < 0) | (px >= w))).reshape(-1)
            frames.append((l, padded, values.reshape(b * h * w, dv), offsets, lookup, outside))
        rows = min(_band_rows(h, w, max(radii), self.chunk_elements),
                   max(1, round(self.work_elements / (w * self.query_ratio * (n_keys + dv)))))
        # Query range of each band: the queries are sorted, so a band is a contiguous slice.
        starts = torch.tensor([min(y, h) * w for y in range(0, h + rows, rows)], device=index.device)
        bounds = torch.searchsorted(index, starts.expand(b, -1).contiguous()).tolist()
        out = []
        for bi in range(b):
            for band, (q0, q1) in enumerate(zip(bounds[bi][:-1], bounds[bi][1:])):
                if q1 == q0:
                    continue
                y0, y1 = band * rows, min(h, band * rows + rows)
                idx = index[bi, q0:q1]
                row = idx // w
                queries = q_sel[bi, q0:q1].float()
                logits, flats = [], []
                for l, padded, _, offsets, lookup, outside in frames:
                    wl = w + 2 * l
                    # Window of query (y, x) spans padded rows y..y+2l and columns x..x+2l; as
                    # positions in the padded band (its first row is y0): (y - y0 + i)·wl + x + j.
                    pos = (idx + row * (2 * l)).unsqueeze(1) + (offsets - y0 * wl)  # (m, k²)
                    flat_pos = pos.view(-1)
                    part = _sampled_dots(queries, pos, padded[bi, y0:y1 + 2 * l].reshape(-1, dk), scale)
                    logits.append(part.masked_fill(outside[y0 * wl:].index_select(0, flat_pos).view_as(part),
                                                   float("-inf")))
                    flat = lookup[y0 * wl:].index_select(0, flat_pos).view_as(pos)
                    flats.append(flat.add_(bi * h * w) if bi else flat)
                # One softmax over all windows; the window centre is always inside, so no row is empty.
                attn = torch.cat(logits, 1).softmax(1)
                acc, s0 = None, 0
                for (_, _, table, _, _, _), flat in zip(frames, flats):
                    weights = attn[:, s0:s0 + flat.shape[1]].to(table.dtype)
                    s0 += flat.shape[1]
                    part = F.embedding_bag(flat, table, per_sample_weights=weights, mode="sum")
                    acc = part if acc is None else acc.add_(part)
                out.append(acc)
        return torch.cat(out).view(b, nq, dv) if len(out) > 1 else out[0].view(b, nq, dv)

    def _attend_gather(self, q_sel: torch.Tensor, index: torch.Tensor, memory: Sequence[KeyValue],
                       size: tuple[int, int]) -> torch.Tensor:
        """The same attention with K and V windows gathered by flat-index arithmetic (chunked):
        devices without the sparse kernels, and the reference for the sparse version."""
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
        keys = torch.stack([kv[0] for kv in memory], dim=1).reshape(b * t * h * w, dk).float()  # once, not per window
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
            out.append(torch.einsum("bqk,bqkd->bqd", attn.to(v_win.dtype), v_win))
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
        q = _project(self.query, x.permute(0, 2, 3, 1))  # (B, H, W, d_k), channels last
        index = self.select_queries(self.nsm_scores(q.permute(0, 3, 1, 2)))  # (B, k), ascending
        q_sel = q.view(b, h * w, -1).gather(1, index.unsqueeze(-1).expand(-1, -1, q.shape[-1]))
        attended = self.attend(q_sel, index, memory, (h, w))
        # Residual update at the selected positions only; the rest keep X_t unchanged. Wo·attended
        # is produced channel-major (C, k) so the update walks each channel plane in raster order.
        updated = x.flatten(2).clone()
        weight, bias = self.out.weight.flatten(1), self.out.bias
        for bi in range(b):
            delta = torch.addmm(bias.unsqueeze(1), weight, attended[bi].t())  # (C, k)
            updated[bi].index_add_(1, index[bi], delta.to(updated.dtype))
        return updated.view(b, c, h, w)


def _arange(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, device=like.device)


def _project(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv applied as a linear map to a channels-last (B, H, W, C) view: the result is
    (B, H, W, out) without the layout copies (and slow 1x1 conv path) of conv + permute."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def _band_rows(h: int, w: int, r: int, budget: int) -> int:
    """Rows per band such that a band's sampled product, (rows·W) queries x (rows+2r)·(W+2r)
    table rows as a logical CSR matrix, stays within `budget` elements (at least one row)."""
    per = w * (w + 2 * r)
    rows = int((-2 * r + math.sqrt(4 * r * r + 4 * budget / per)) / 2)
    while rows > 1 and rows * (rows + 2 * r) * per > budget:
        rows -= 1
    return min(h, max(1, rows))


def _window_count(size: int, r: int, like: torch.Tensor) -> torch.Tensor:
    """In-image positions of a (2r+1) window along one axis of length `size`, per position."""
    pos = torch.arange(size, device=like.device)
    return ((pos + r).clamp(max=size - 1) - (pos - r).clamp(min=0) + 1).to(like.dtype)


def _box_sum(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sums of x (B, H, W, C) over (2r+1)^2 windows, zero outside the image; separable, and on
    a channels-last layout (the pooling kernels are much faster there than on NCHW)."""
    k = 2 * r + 1
    s = F.avg_pool2d(x.permute(0, 3, 1, 2), (k, 1), 1, (r, 0), divisor_override=1)
    s = F.avg_pool2d(s, (1, k), 1, (0, r), divisor_override=1)
    return s.permute(0, 2, 3, 1)


@functools.cache
def _silence_csr_beta_warning() -> None:
    """torch warns once per process that sparse CSR support is beta (the CSR ops used here are
    long-standing): take that one warning here, filtered, instead of in the user's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.sparse_csr_tensor(torch.tensor([0, 1]), torch.tensor([0]), torch.zeros(1), size=(1, 1),
                                check_invariants=False)


def _sampled_dots(rows: torch.Tensor, cols: torch.Tensor, table: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """(m, n) dots alpha·rows[i]·table[cols[i, j]] without gathering table rows: a CSR sampled
    matrix product (SDDMM). `cols` must be increasing and distinct along each row."""
    _silence_csr_beta_warning()
    m, n = cols.shape
    crow = torch.arange(0, m * n + 1, n, device=rows.device)
    pattern = torch.sparse_csr_tensor(crow, cols.reshape(-1), rows.new_zeros(m * n), size=(m, table.shape[0]),
                                      check_invariants=False)
    return torch.sparse.sampled_addmm(pattern, rows, table.t(), beta=0.0, alpha=alpha).values().view(m, n)


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
