"""The serving graph: encode, score every item, mask exclusions, top-K, in one module.

This is what every backend runs (eagerly, compiled, or exported to ONNX and from
there to ONNX Runtime / TensorRT). It computes exactly what
``SeqRecModel.topk`` computes for the *last* position, with these serving-only
rewrites, each exact up to float rounding:

* the item table (id embedding + text projection) is folded into constants at
  construction, so serving pays nothing for the text tower;
* only the last position's state is needed, so the last Transformer layer runs
  its query, output projection and FFN for that one position (its keys and
  values still need every position of the layer below), and the short-term
  pool looks at the last ``short_window`` events only;
* attention runs head-major (``[H, B, L, L]``) so that the age bias, gathered
  from a ``[H, n_buckets]`` table, adds without a transpose of the largest
  tensor; in the full layers a masked pair's age is pushed past 2**100 s
  (padding keys' times back, future keys' query times forward, on the small
  ``[B, L]`` and ``[L, L]`` tensors) onto a table column holding the masked
  logit, so causal/padding masking and the age bias are one lookup; a layer
  without ages adds a causal ``[L, L]`` and a key-padding ``[B, 1, L]`` term;
  the ``1/sqrt(d_head)`` scale is folded into the query weights;
* exclusions arrive as padded item indices ``[B, E]`` (0 = padding, which is
  always excluded anyway) and are scattered to the masked score in-graph,
  together with the history items in the input window: the host never builds
  a ``[B, n_items + 1]`` mask, so the input scales with the user, not the
  catalogue.

``dtype=torch.float16`` builds the half-precision variant (for TensorRT, which
takes precision from the ONNX): time arithmetic and the final mask + top-K stay
in float32 (seconds overflow float16; the ``-1e9`` masked score must be exact),
everything else is float16 with a masked attention logit that float16 can hold.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from recstream.inference.model import SeqRecModel
from torch import nn

#: The score of an excluded item or padding, as ``SeqRecModel.topk`` returns it.
MASKED_SCORE = -1e9
#: Masked attention logit per compute dtype: finite, so an all-masked (padding)
#: row softmaxes to a uniform row instead of NaN, and representable in float16.
_ATTN_MASKED = {torch.float32: -1e9, torch.float16: -3.0e4}

#: Bumped whenever the graph's computation or interface changes, so that cached
#: exports made by older code are not served (see ``export.json``).
GRAPH_VERSION = 3

#: Added to ``log2`` before flooring in ``_bucket0``: above any float32 log error.
_LOG2_MARGIN = 1e-4
#: log2 of the age, in seconds, that marks a masked attention pair in the full
#: layers (a padding key's time is pushed 2**100 s back, a future key's query
#: 2**100 s forward; float32 holds it exactly). Any real age is under 2**60 s.
_MASKED_AGE_LOG2 = 100

INPUT_NAMES = ("items", "event_types", "times", "query_times", "exclude")
OUTPUT_NAMES = ("scores", "indices")


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` query ranges ``[start, end)`` covering ``0..n`` (some empty when n < parts)."""
    ends = [(n * (i + 1)) // parts for i in range(parts)]
    return list(zip([0, *ends[:-1]], ends, strict=True))


def _causal(s: int, e: int, device: torch.device) -> torch.Tensor:
    """``[e - s, e]`` bool: query ``s + r`` may see key ``c`` (``c <= s + r``)."""
    qi = torch.arange(s, e, device=device).view(-1, 1)
    return torch.arange(0, e, device=device).view(1, -1) <= qi


def _log2_steps(n: int) -> torch.Tensor:
    """``steps[j]``: the least float32 ``x`` with ``torch.log2(x) >= j``, j < n.

    That is 2**j or, where torch rounds ``log2`` of the floats just below 2**j
    up to j, a few ulps less: the exact edges of the model's time buckets.
    """
    steps = []
    for j in range(n):
        top = torch.tensor([2.0**j], dtype=torch.float32).view(torch.int32)
        # The 256 floats up to 2**j, on the same vectorised kernel the model uses.
        cands = (top - torch.arange(255, -1, -1, dtype=torch.int32)).view(torch.float32)
        first = int(torch.nonzero(torch.log2(cands) >= j)[0])
        steps.append(float(cands[first]))
    return torch.tensor(steps, dtype=torch.float32)


def _lookup(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table[..., idx]`` for a ``[R, C]`` table: ``[R, *idx.shape]``.

    Written as ``torch.gather`` so that it exports to ONNX GatherElements: ONNX
    Runtime's Gather copies one element at a time and was 10x slower on the
    ``[B, L, L]`` age-bias lookup, the largest gather in the graph.
    """
    flat = idx.reshape(1, -1)
    if table.shape[0] > 1:  # (an Expand to the same shape would still copy in ORT)
        flat = flat.expand(table.shape[0], -1)
    return torch.gather(table, 1, flat).view(table.shape[0], *idx.shape)


def _gelu_onnx(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in the node order ONNX Runtime fuses into one Gelu kernel
    (Div, Erf, Add, Mul x, Mul 0.5); ``F.gelu`` exports in an order it does not fuse."""
    return x * (torch.erf(x / math.sqrt(2.0)) + 1.0) * 0.5


class _Block(nn.Module):
    """A model block with separate q/k/v projections (q pre-scaled by ``1/sqrt(d_head)``).

    Separate projections let each land directly in the layout its matmul wants,
    instead of one fused output that is split, sliced and transposed.
    """

    def __init__(self, src: nn.Module, d: int, dh: int, dtype: torch.dtype) -> None:
        super().__init__()
        w, b = src.qkv.weight.detach(), src.qkv.bias.detach()
        scale = 1.0 / math.sqrt(dh)
        self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))
        with torch.no_grad():
            self.q.weight.copy_(w[:d] * scale)
            self.q.bias.copy_(b[:d] * scale)
            self.k.weight.copy_(w[d : 2 * d])
            self.k.bias.copy_(b[d : 2 * d])
            self.v.weight.copy_(w[2 * d :])
            self.v.bias.copy_(b[2 * d :])
        self.ln1, self.out, self.ln2 = src.ln1, src.out, src.ln2
        self.ffn_in, self.ffn_out = src.ffn[0], src.ffn[3]  # ffn[1] GELU, ffn[2] dropout
        self.to(dtype)


class ServingGraph(nn.Module):
    """``(items, event_types, times, query_times, exclude) -> (scores, indices)``.

    Inputs are a :class:`inference.features.SequenceBatch`'s four ``[B, L]``
    tensors (left padded, ``L <= max_len``) and ``exclude`` ``[B, E]`` int64 item
    indices, 0-padded. Outputs: ``[B, k]`` float32 scores (best first) and int64
    item indices; rows with fewer than ``k`` allowed items end in ``-1e9``.

    ``attn_chunks`` splits the full layers' queries into that many ranges, each
    attending only to the keys at or before its end: causal attention never
    looks further, so this skips most of the masked upper triangle (exact:
    those entries weigh exp(-1e9) = 0) at the cost of a few more, smaller ops.
    ``onnx_friendly`` picks op spellings that ONNX Runtime fuses (export only).
    """

    def __init__(
        self,
        model: SeqRecModel,
        k: int,
        dtype: torch.dtype = torch.float32,
        exclude_history: bool = True,
        attn_chunks: int = 1,
        onnx_friendly: bool = False,
    ) -> None:
        super().__init__()
        if dtype not in _ATTN_MASKED:
            raise ValueError(f"unsupported serving dtype {dtype}; use float32 or float16")
        cfg = model.cfg
        if not 1 <= k <= cfg.n_items:
            raise ValueError(f"k must be in [1, n_items={cfg.n_items}], got {k}")
        if attn_chunks < 1:
            raise ValueError(f"attn_chunks must be >= 1, got {attn_chunks}")
        self.cfg = cfg
        self.k = k
        self.dtype = dtype
        self.exclude_history = exclude_history
        self.attn_chunks = attn_chunks
        self.onnx_friendly = onnx_friendly
        self.attn_masked = _ATTN_MASKED[dtype]
        self.h = cfg.n_heads
        self.dh = cfg.d_model // cfg.n_heads
        # Layer index -> its row of the age_bias buffer, for the biased layers.
        self.age_row = {layer: j for j, layer in enumerate(cfg.age_bias_layer_ids)}
        nb = cfg.n_time_buckets
        src = copy.deepcopy(model).eval().float()
        with torch.no_grad():
            table = src.item_table().detach()
            # Inputs are table[items] * sqrt(d): pre-scaled once, bitwise the same.
            self.register_buffer("item_in", (table * math.sqrt(cfg.d_model)).to(dtype))
            self.register_buffer("item_out_t", table.t().contiguous().to(dtype))
            self.register_buffer("pos", src.pos.weight.detach().clone().to(dtype))
            self.register_buffer("log2_steps", _log2_steps(_MASKED_AGE_LOG2 + 2).view(1, -1))
            if cfg.use_time:
                # [layers, H, 101]: head-major, indexed by bucket - 1 (bucket 0 is
                # never an age) up to nb - 2, then the oldest bucket repeated up to
                # column 99 (where _bucket0 would clamp), and column 100, the
                # masked age's, holds the masked logit: the causal/padding mask
                # and the age bias are one lookup, with no Where over [B, L, L].
                nl = len(self.age_row)
                w = src.age_bias.weight.detach().t().reshape(nl, self.h, nb)[:, :, 1:]
                old = w[:, :, -1:].expand(nl, self.h, _MASKED_AGE_LOG2 - (nb - 1))
                w = torch.cat([w, old, torch.full((nl, self.h, 1), self.attn_masked)], 2)
                self.register_buffer("age_bias", w.to(dtype))
            if cfg.use_fusion:
                self.register_buffer("short_age", src.short_age.weight.detach()[1:, 0].to(dtype))
        self.event_type = src.event_type.to(dtype) if cfg.use_event_type else None
        self.gap = src.gap.to(dtype) if cfg.use_time else None
        self.blocks = nn.ModuleList(_Block(b, cfg.d_model, self.dh, dtype) for b in src.blocks)
        self.ln_out = src.ln_out.to(dtype)
        if cfg.use_fusion:
            self.short_q = src.short_q.to(dtype)
            self.short_k = src.short_k.to(dtype)
            self.gate = src.gate.to(dtype)

    # ---- time buckets ----------------------------------------------------

    def _bucket0(self, seconds: torch.Tensor, top: int | None = None) -> torch.Tensor:
        """``log_time_bucket(seconds) - 1``, as float in ``[0, nb - 2]``, exactly.

        ``top`` raises that clamp (the full layers' age lookup: ``_MASKED_AGE_LOG2``).

        The model's bucket is ``clamp(1 + floor(log2(1 + max(s, 0))), 1, nb - 1)``
        with torch's float32 ``log2``. ONNX has no Log2, and ``Log(x) / ln 2``
        can land one float32 step off torch's value near a power of two, either
        way (x = 2**15 gives 14.999999: one bucket low for a gap of exactly
        2**15 - 1 s). So ``log2(x) + 1e-4`` is floored, which gives torch's value
        or one more (the error of either log is ~1e-6 here, far below 1e-4, and
        the margin is far below the 1 that would make it two more), and one
        lookup in a table of the exact points where torch's ``floor(log2(x))``
        steps (``_log2_steps``) takes the one back. Kept in float (4 bytes, not
        int64's 8) until the one cast its user needs.
        """
        top = self.cfg.n_time_buckets - 2 if top is None else top
        x = torch.clamp(seconds, min=0.0) + 1.0
        b = torch.clamp(torch.floor(torch.log2(x) + _LOG2_MARGIN), 0.0, float(top + 1))
        down = (x < _lookup(self.log2_steps, b.to(torch.long)).view(b.shape)).to(x.dtype)
        return torch.clamp(b - down, min=0.0, max=float(top))

    # ---- attention -------------------------------------------------------

    def _heads(self, t: torch.Tensor, b: int, n: int) -> torch.Tensor:
        """``[B * L, d]`` -> head-major ``[H, B, L, dh]``."""
        return t.view(b, n, self.h, self.dh).permute(2, 0, 1, 3)

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        """``[H, B, L, dh]`` -> ``[B * L, d]``."""
        _, b, n, _ = y.shape
        return y.permute(1, 2, 0, 3).reshape(b * n, self.h * self.dh)

    def _k_t(self, blk: _Block, hx: torch.Tensor, b: int, n: int) -> torch.Tensor:
        """Keys, transposed for ``q @ k^T``: ``[H, B, dh, L]``."""
        if self.onnx_friendly:
            # K^T straight from the weights, ``W_k @ hx^T``, L innermost: the
            # head-major permute then moves whole rows of L. From ``k(hx)`` it
            # is one Transpose with L as a strided inner axis, which ONNX
            # Runtime ran at 16% of the graph's time (two layers, b64 L200).
            kt = blk.k.weight @ hx.t() + blk.k.bias.unsqueeze(1)  # [d, B * L]
            return kt.view(self.h, self.dh, b, n).permute(0, 2, 1, 3)
        return self._heads(blk.k(hx), b, n).transpose(-1, -2)

    def _bias(self, layer: int, age: torch.Tensor | None, allowed: torch.Tensor,
              masked: torch.Tensor) -> torch.Tensor:
        """Additive attention bias ``[H, B, Lq, Lk]`` (or ``[1, ...]`` without ages)
        from ``_bucket0`` ages ``[B, Lq, Lk]`` and the allowed pairs."""
        if age is None or layer not in self.age_row:
            zero = torch.zeros((), dtype=masked.dtype, device=masked.device)
            return torch.where(allowed, zero, masked).unsqueeze(0)
        idx = torch.where(allowed, age, float(_MASKED_AGE_LOG2))  # masked column
        return self._age_lookup(layer, idx)

    def _age_lookup(self, layer: int, age: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s age bias ``[H, *age.shape]`` for ages (column indices) ``age``."""
        return _lookup(self.age_bias[self.age_row[layer]], age.to(torch.long))

    def _plain_bias(self, s: int, e: int, valid: torch.Tensor,
                    masked: torch.Tensor) -> torch.Tensor:
        """The mask-only bias ``[1, B, e - s, e]`` of queries ``s..e-1`` over keys ``0..e-1``.

        A sum of two small broadcast terms, causal ``[Lq, Lk]`` and key padding
        ``[B, 1, Lk]``, each half the masked logit: ONNX Runtime's Where over the
        whole ``[B, Lq, Lk]`` took 3.7 times this Add (0.45 against 0.12 ms at
        b64 L200's largest chunk). Exact for every real query: a pair either
        term masks weighs exp(-5e8) = 0. A padding query spreads its softmax
        over the padding keys before it, whose values are all equal (padding
        inputs are zero), and no real query reads a padding position's output.
        """
        half = masked * 0.5
        zero = torch.zeros((), dtype=masked.dtype, device=masked.device)
        causal = torch.where(_causal(s, e, valid.device), zero, half)  # [Lq, Lk]
        keys = torch.where(valid[:, :e], zero, half).unsqueeze(1)  # [B, 1, Lk]
        return (causal + keys).unsqueeze(0)

    def _ffn(self, blk: _Block, x: torch.Tensor) -> torch.Tensor:
        h = blk.ffn_in(blk.ln2(x))
        h = _gelu_onnx(h) if self.onnx_friendly else F.gelu(h)
        return x + blk.ffn_out(h)

    def _full_layer(self, i: int, x: torch.Tensor, b: int, n: int,
                    plains: list[torch.Tensor | None],
                    ages: list[torch.Tensor | None]) -> torch.Tensor:
        """Block ``i`` for every position of ``x`` ``[B * L, d]``; per query chunk,
        ``plains`` holds its mask-only bias and ``ages`` its masked ages."""
        blk = self.blocks[i]
        hx = blk.ln1(x)
        q, v = self._heads(blk.q(hx), b, n), self._heads(blk.v(hx), b, n)
        kt = self._k_t(blk, hx, b, n)
        ys = []
        for (s, e), plain, age in zip(_chunks(n, self.attn_chunks), plains, ages, strict=True):
            bias = self._age_lookup(i, age) if age is not None and i in self.age_row else plain
            ys.append(self._attend(q[:, :, s:e], kt[..., :e], v[:, :, :e], bias))
        x = x + blk.out(self._merge(torch.cat(ys, dim=2) if len(ys) > 1 else ys[0]))
        return self._ffn(blk, x)

    def _last_layer(self, x: torch.Tensor, b: int, n: int, bias: torch.Tensor) -> torch.Tensor:
        """The last block for the last position only; ``bias`` ``[H, B, 1, L]``. -> ``[B, d]``."""
        blk = self.blocks[-1]
        hx = blk.ln1(x)
        kt, v = self._k_t(blk, hx, b, n), self._heads(blk.v(hx), b, n)
        last = x.view(b, n, -1)[:, -1]  # [B, d]
        q = self._heads(blk.q(hx.view(b, n, -1)[:, -1]), b, 1)  # [H, B, 1, dh]
        return self._ffn(blk, last + blk.out(self._merge(self._attend(q, kt, v, bias))))

    def _attend(self, q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
        """``softmax(q @ kt + bias) @ v`` (q pre-scaled), head-major.

        Eagerly, torch's fused attention kernel: it adds the bias and
        softmaxes tile by tile instead of writing the [H, B, Lq, Lk] logits
        and probabilities out (alone, [64, 2, 200, 32] with a float mask: 17
        -> 6 ms on a 2-core CPU; the whole b64/L200 batch at four row chunks
        gained nothing measurable). Exported, the plain ops, which ONNX
        Runtime and TensorRT fuse themselves.
        """
        if self.onnx_friendly:
            return torch.softmax(q @ kt + bias, dim=-1) @ v
        return F.scaled_dot_product_attention(q, kt.transpose(-1, -2), v, attn_mask=bias,
                                              scale=1.0)

    # ---- forward ---------------------------------------------------------

    def forward(
        self,
        items: torch.Tensor,
        event_types: torch.Tensor,
        times: torch.Tensor,
        query_times: torch.Tensor,
        exclude: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        b, n = items.shape
        valid = items != 0
        x = self.item_in[items] + self.pos[cfg.max_len - n :].unsqueeze(0)
        if self.event_type is not None:
            x = x + self.event_type(event_types)
        if self.gap is not None:
            prev_t = torch.cat([times[:, :1], times[:, :-1]], dim=1)
            prev_valid = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)
            gap_b = self._bucket0(times - prev_t).to(torch.long) + 1
            x = x + self.gap(torch.where(prev_valid & valid, gap_b, torch.zeros_like(gap_b)))
        x = x * valid.unsqueeze(-1).to(x.dtype)
        tokens = x
        x = x.reshape(b * n, -1)  # linear layers on 2-D inputs (a Gemm with fused bias)
        # On x's device: a CPU scalar would be a host-to-device copy, which CUDA
        # graph capture refuses.
        masked = x.new_full((), self.attn_masked)

        if cfg.n_layers > 1:
            full = range(cfg.n_layers - 1)
            full_ages = any(i in self.age_row for i in full)
            need_plain = not full_ages or any(i not in self.age_row for i in full)
            plains: list[torch.Tensor | None] = []
            ages: list[torch.Tensor | None] = []
            if full_ages:
                # Masked pairs get an age of 2**100 s or more (column _MASKED_AGE_LOG2
                # of the lookup); a real pair's age is computed exactly as before.
                far = float(2.0**_MASKED_AGE_LOG2)
                key_t = torch.where(valid, times, times.new_full((), -far))
            for s, e in _chunks(n, self.attn_chunks):
                plains.append(self._plain_bias(s, e, valid, masked) if need_plain else None)
                if full_ages:
                    future = torch.where(_causal(s, e, items.device), 0.0, far).to(times.dtype)
                    seconds = (query_times[:, s:e].unsqueeze(2) + future) - key_t[:, :e].unsqueeze(1)
                    ages.append(self._bucket0(seconds, top=_MASKED_AGE_LOG2))
                else:
                    ages.append(None)
            for i in range(cfg.n_layers - 1):
                x = self._full_layer(i, x, b, n, plains, ages)

        # Ages seen from the last position (its query time is the trigger time).
        need_age = cfg.use_time or cfg.use_fusion
        age_last = self._bucket0(query_times[:, -1:] - times) if need_age else None  # [B, L]
        bias = self._bias(
            cfg.n_layers - 1, None if age_last is None else age_last.unsqueeze(1),
            valid.unsqueeze(1), masked,
        )
        long_term = self.ln_out(self._last_layer(x, b, n, bias))  # [B, d]
        user = long_term
        if cfg.use_fusion and age_last is not None:
            w = cfg.short_window
            win = tokens[:, -w:]  # the only keys the last query's window can see
            logits = (self.short_k(win) @ self.short_q(long_term).unsqueeze(-1)).squeeze(-1)
            logits = logits / math.sqrt(cfg.d_model) + self.short_age[age_last[:, -w:].to(torch.long)]
            logits = torch.where(valid[:, -w:], logits, masked)
            short_term = (torch.softmax(logits, dim=-1).unsqueeze(1) @ win).squeeze(1)
            g = torch.sigmoid(self.gate(torch.cat([long_term, short_term], dim=-1)))
            user = g * long_term + (1.0 - g) * short_term

        # Scores, masks and top-K in float32 whatever the compute dtype.
        scores = (user @ self.item_out_t).float()  # [B, n_items + 1]
        drop = torch.cat([exclude, items], dim=1) if self.exclude_history else exclude
        drop = torch.cat([torch.zeros_like(drop[:, :1]), drop], dim=1)  # 0 = padding column
        scores = scores.scatter(1, drop, MASKED_SCORE)
        return torch.topk(scores, k=self.k, dim=1)
