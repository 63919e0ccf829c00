"""The sequence model: one definition used by training (``forward``) and serving
(``score`` / ``topk``).

A SASRec-family causal Transformer (pre-LN blocks, learned positions) made
time-aware and text-aware:

* each event's input = item representation * sqrt(d) + position + event type
  + bucketed log time gap to the previous event (``use_time``);
* the last attention layer (every layer with ``age_bias_layers="all"``) adds
  a learned per-head bias indexed by the bucketed *age* of the key event
  relative to the query position's prediction time (``use_time``): at
  training that is the time of the query's own event, at serving the trigger
  time. Ages enter as a [B, L, L] bias because each query
  position has its own prediction time; a per-token age input would leak the
  future into earlier positions;
* item representation = learned id embedding + linear projection of a frozen
  language-model embedding of the item's text (``use_text``), shared by the
  input and the output layer. Items with ``id_mask == 0`` (no training
  interactions) are represented by their text alone, so new items are scorable;
* a learned gate mixes the final causal state (long-term interest) with an
  attention pool over the last ``short_window`` events (short-term interest)
  (``use_fusion``);
* optional masked-item pre-training (``masked_pretraining``, BERT4Rec's Cloze
  task): some events' items are replaced by a learned [mask] vector, the blocks
  attend both ways, and the hidden items are predicted from what surrounds
  them (:meth:`SeqRecModel.masked_item_loss`). Serving never uses the mask.

With ``use_time = use_text = use_event_type = use_fusion = False`` this is SASRec
(positions + ids, causal self-attention, shared item embeddings).

Tensors in, tensors out: no numpy, no device choices, no settings objects, and
masks are tensor ops so that ``torch.onnx.export`` can trace ``topk``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from recstream.inference.features import N_EVENT_TYPE_IDS, log_time_bucket
from torch import nn

#: Added to forbidden attention logits. Finite on purpose: an all-masked row
#: (a padding query) must give a finite softmax, not NaN.
_MASKED = -1e9


#: ``ModelConfig.age_bias_layers`` choices.
AGE_BIAS_LAYERS = ("all", "last")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the model; saved as ``config.json``."""

    n_items: int  # catalogue size; model indices are 1..n_items, 0 is padding
    max_len: int = 200
    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    # FFN width / d_model. 1 (as in the SASRec paper) matches 4 on MovieLens validation
    # NDCG@10 and halves the CPU cost of an epoch.
    ffn_mult: int = 1
    dropout: float = 0.2
    use_time: bool = True
    use_text: bool = True
    use_event_type: bool = True
    use_fusion: bool = True
    text_dim: int = 384
    n_time_buckets: int = 32
    short_window: int = 5
    loss: str = "full"  # "full" softmax over the catalogue, or "sampled"
    #: For loss == "sampled": uniform negatives shared by a batch. 4,096, not 1,024: on
    #: Amazon Beauty (54,542 items) test NDCG@10 rose by a fifth (bench/RESULTS.md).
    n_negatives: int = 4096
    #: Training only, with text: share of item rows whose id embedding is dropped
    #: per forward pass, so the text projection must carry items on its own, as
    #: it does for a cold item (id_mask 0) at serving time.
    id_dropout: float = 0.0
    #: The model carries a learned [mask] input vector, for masked-item
    #: pre-training (``TrainConfig.pretrain_epochs``).
    masked_pretraining: bool = False
    #: With ``use_time``: the attention layers that add the age bias, only the
    #: "last" or "all" (``AGE_BIAS_LAYERS``). Serving runs the last layer for
    #: the last position only, so there the bias is [B, 1, L]; in any earlier
    #: layer it is [B, L, L], about 40% of a CPU scorer's time at L=200.
    #: "last" by default: test quality on MovieLens-100K was level over eight
    #: seeds (README, "Training and serving a model"). Configs saved before the
    #: field existed load as "all" (``from_dict``), which is what they trained.
    age_bias_layers: str = "last"

    def validate(self) -> ModelConfig:
        """Raise ``ValueError`` naming the first bad field; return self for chaining."""
        checks = [
            (self.n_items >= 1, "n_items must be >= 1"),
            (self.max_len >= 1, "max_len must be >= 1"),
            (self.d_model >= 1 and self.n_heads >= 1, "d_model and n_heads must be >= 1"),
            (self.d_model % self.n_heads == 0, "d_model must be divisible by n_heads"),
            (self.n_layers >= 1 and self.ffn_mult >= 1, "n_layers and ffn_mult must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (not self.use_text or self.text_dim >= 1, "text_dim must be >= 1 with use_text"),
            (self.n_time_buckets >= 2, "n_time_buckets must be >= 2"),
            (self.short_window >= 1, "short_window must be >= 1"),
            (self.loss in ("full", "sampled"), "loss must be 'full' or 'sampled'"),
            (self.n_negatives >= 1, "n_negatives must be >= 1"),
            (0.0 <= self.id_dropout < 1.0, "id_dropout must be in [0, 1)"),
            (self.age_bias_layers in AGE_BIAS_LAYERS,
             f"age_bias_layers must be {' or '.join(repr(v) for v in AGE_BIAS_LAYERS)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid ModelConfig: {msg} ({self})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def age_bias_layer_ids(self) -> tuple[int, ...]:
        """Indices of the blocks that add the age bias (empty without ``use_time``)."""
        if not self.use_time:
            return ()
        if self.age_bias_layers == "last":
            return (self.n_layers - 1,)
        return tuple(range(self.n_layers))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict, ignoring keys that are not config fields (metadata).

        A dict without ``age_bias_layers`` predates the field, when every layer
        had the age bias: it gets "all", whatever today's default, so that its
        saved ``age_bias`` weights fit.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        fields.setdefault("age_bias_layers", "all")
        return cls(**fields).validate()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        return cls.from_dict(json.loads(path.read_text()))


class _Block(nn.Module):
    """Pre-LN Transformer block whose attention takes an additive [B, H, L, L] bias."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, cfg.ffn_mult * d), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ffn_mult * d, d),
        )
        self.drop = nn.Dropout(cfg.dropout)
        # Explanations only (SeqRecModel.attention_rollout): a plain Python flag,
        # False in training and export, so traced graphs never see it.
        self.keep_attention = False
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = q @ k.transpose(-1, -2) / math.sqrt(d // h) + bias
        att = self.drop(torch.softmax(att, dim=-1))
        if self.keep_attention:
            self.last_attention = att.detach()
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.out(y))
        return x + self.drop(self.ffn(self.ln2(x)))


class SeqRecModel(nn.Module):
    """Time- and text-aware causal sequence recommender (see module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        d, n1 = cfg.d_model, cfg.n_items + 1
        self.item_id = nn.Embedding(n1, d, padding_idx=0)
        # 1 = the item has a trained id embedding; 0 = text only (cold item).
        self.register_buffer("id_mask", torch.ones(n1))
        if cfg.use_text:
            # Frozen LM embeddings: a buffer, saved with the weights, never trained.
            self.register_buffer("item_text", torch.zeros(n1, cfg.text_dim))
            self.text_proj = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, d))
        self.pos = nn.Embedding(cfg.max_len, d)
        if cfg.use_event_type:
            self.event_type = nn.Embedding(N_EVENT_TYPE_IDS, d, padding_idx=0)
        if cfg.use_time:
            self.gap = nn.Embedding(cfg.n_time_buckets, d)
            # Per biased layer, per head age bias; zero init = starts as plain SASRec.
            self.age_bias = nn.Embedding(cfg.n_time_buckets,
                                         cfg.n_heads * len(cfg.age_bias_layer_ids))
            nn.init.zeros_(self.age_bias.weight)
        if cfg.use_fusion:
            self.short_q = nn.Linear(d, d)
            self.short_k = nn.Linear(d, d)
            self.short_age = nn.Embedding(cfg.n_time_buckets, 1)
            nn.init.zeros_(self.short_age.weight)
            self.gate = nn.Linear(2 * d, d)
        if cfg.masked_pretraining:
            self.mask_emb = nn.Parameter(torch.randn(d) * 0.02)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_out = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.item_id.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        if cfg.use_text:
            # Start the text part at the id embeddings' scale (per-dim std ~0.02):
            # the default init makes it ~30x larger, so the first logits are huge
            # (initial loss ~17 instead of ln(n_items)) and training starts badly.
            nn.init.normal_(self.text_proj[1].weight, std=0.02 / math.sqrt(cfg.text_dim))
            nn.init.zeros_(self.text_proj[1].bias)

    # ---- item side -------------------------------------------------------

    def set_item_text(self, text: torch.Tensor) -> None:
        """Install the frozen text table, [n_items + 1, text_dim] (row 0 = padding)."""
        if not self.cfg.use_text:
            raise ValueError("model was built with use_text=False")
        if tuple(text.shape) != tuple(self.item_text.shape):
            raise ValueError(f"text table shape {tuple(text.shape)} != {tuple(self.item_text.shape)}")
        self.item_text.copy_(text)

    def item_table(self) -> torch.Tensor:
        """Item representations [n_items + 1, d], shared by input and output."""
        mask = self.id_mask.unsqueeze(1)
        if self.training and self.cfg.use_text and self.cfg.id_dropout > 0:
            # No 1/(1-p) rescale: a dropped row should look exactly like a cold item.
            keep = torch.rand_like(mask) >= self.cfg.id_dropout
            mask = mask * keep
        rep = self.item_id.weight * mask
        if self.cfg.use_text:
            rep = rep + self.text_proj(self.item_text)
        return rep

    # ---- sequence side ---------------------------------------------------

    def encode(
        self,
        items: torch.Tensor,
        event_types: torch.Tensor,
        times: torch.Tensor,
        query_times: torch.Tensor,
        table: torch.Tensor | None = None,
        causal: bool = True,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """User states [B, L, d]: position t summarises events 0..t only (causal).

        Inputs are a :class:`inference.features.SequenceBatch`'s tensors, left padded.
        ``table`` is :meth:`item_table` when the caller already holds it (an
        evaluation pass scores many batches with one table). Pre-training only:
        ``causal=False`` lets the blocks attend to later events too, and
        ``hidden`` ([B, L] bool) replaces those events' items by the [mask]
        vector (their time, type and position stay visible).
        """
        cfg = self.cfg
        b, n = items.shape
        table = self.item_table() if table is None else table
        valid = items != 0
        # F.embedding, not table[items]: on a multi-threaded CPU, indexing's backward
        # (an accumulating index_put) sums the rows' gradients in a varying order,
        # so the same seed gave different weights from run to run.
        rep = F.embedding(items, table)
        if hidden is not None:
            if not cfg.masked_pretraining:
                raise ValueError("hidden items need a model built with masked_pretraining=True")
            rep = torch.where(hidden.unsqueeze(-1), self.mask_emb.to(rep.dtype), rep)
        x = rep * math.sqrt(cfg.d_model)
        x = x + self.pos.weight[cfg.max_len - n :].unsqueeze(0)  # right-aligned positions
        if cfg.use_event_type:
            x = x + self.event_type(event_types)
        if cfg.use_time:
            prev_t = torch.cat([times[:, :1], times[:, :-1]], dim=1)
            prev_valid = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1)
            gap_b = log_time_bucket(times - prev_t, cfg.n_time_buckets)
            x = x + self.gap(torch.where(prev_valid & valid, gap_b, torch.zeros_like(gap_b)))
        x = self.drop(x * valid.unsqueeze(-1))
        tokens = x

        # Allowed attention: causal (key <= query) and key not padding. A query
        # always sees itself, so padding rows attend to themselves only instead
        # of spreading a uniform softmax over every key, the future included.
        ar = torch.arange(n, device=items.device)
        before = ar.view(1, n) <= ar.view(n, 1)  # [L_q, L_k]
        itself = (ar.view(1, n) == ar.view(n, 1)).unsqueeze(0)
        allowed = valid.unsqueeze(1) | itself  # [B, L_q, L_k]
        if causal:
            allowed = before.unsqueeze(0) & allowed
        mask = torch.where(allowed, 0.0, _MASKED).to(x.dtype)
        age_b = None
        if cfg.use_time or cfg.use_fusion:
            age_b = log_time_bucket(query_times.unsqueeze(2) - times.unsqueeze(1), cfg.n_time_buckets)
        if cfg.use_time:
            h = cfg.n_heads
            age = self.age_bias(age_b).permute(0, 3, 1, 2)  # [B, H*biased layers, L, L]
        biased = cfg.age_bias_layer_ids
        for i, block in enumerate(self.blocks):
            bias = mask.unsqueeze(1)
            if i in biased:
                j = biased.index(i)
                bias = bias + age[:, j * h : (j + 1) * h]
            x = block(x, bias)
        long_term = self.ln_out(x)
        if not cfg.use_fusion:
            return long_term

        # Short-term interest: attention pool over the last `short_window` events.
        window = before & (ar.view(n, 1) - ar.view(1, n) < cfg.short_window)
        logits = self.short_q(long_term) @ self.short_k(tokens).transpose(1, 2)
        logits = logits / math.sqrt(cfg.d_model) + self.short_age(age_b).squeeze(-1)
        short_allowed = window.unsqueeze(0) & (valid.unsqueeze(1) | itself)
        logits = logits + torch.where(short_allowed, 0.0, _MASKED).to(x.dtype)
        short_term = torch.softmax(logits, dim=-1) @ tokens
        g = torch.sigmoid(self.gate(torch.cat([long_term, short_term], dim=-1)))
        return g * long_term + (1.0 - g) * short_term

    @torch.no_grad()
    def attention_rollout(
        self,
        items: torch.Tensor,
        event_types: torch.Tensor,
        times: torch.Tensor,
        query_times: torch.Tensor,
    ) -> torch.Tensor:
        """How much the last position's state draws on each input event, [B, L], rows sum to 1.

        Attention rollout (Abnar & Zuidema, 2020): each block's head-averaged
        attention with the residual path as identity, ``0.5 * A + 0.5 * I``,
        multiplied through the blocks. Padding gets no weight. An explanation
        of the Transformer blocks, not of the short-term fusion (if enabled).
        """
        for block in self.blocks:
            block.keep_attention = True
        try:
            self.encode(items, event_types, times, query_times)
            layers = [block.last_attention for block in self.blocks]
        finally:
            for block in self.blocks:
                block.keep_attention = False
                block.last_attention = None
        n = items.shape[1]
        eye = torch.eye(n, device=items.device)
        rollout = eye.expand(items.shape[0], n, n)
        for att in layers:
            assert att is not None
            a = 0.5 * att.mean(dim=1) + 0.5 * eye
            rollout = (a / a.sum(dim=-1, keepdim=True)) @ rollout
        weights = rollout[:, -1] * (items != 0)
        return weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    # ---- training --------------------------------------------------------

    def forward(
        self,
        items: torch.Tensor,
        event_types: torch.Tensor,
        times: torch.Tensor,
        query_times: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean next-item cross-entropy over positions with ``targets != 0``.

        ``loss == "full"``: softmax over the whole catalogue. ``"sampled"``: softmax
        over the target and ``negatives`` (a [K] tensor of item indices drawn by
        the caller, shared by the batch); a negative equal to the target is masked.
        """
        table = self.item_table()
        states = self.encode(items, event_types, times, query_times, table)
        keep = targets != 0
        return self._item_loss(states[keep], targets[keep], table, negatives)

    def masked_item_loss(
        self,
        items: torch.Tensor,
        event_types: torch.Tensor,
        times: torch.Tensor,
        query_times: torch.Tensor,
        hidden: torch.Tensor,
        negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Masked-item pre-training loss: mean cross-entropy of the items at the
        ``hidden`` positions ([B, L] bool, on real events only), each predicted
        from every other event of its sequence (attention both ways). The
        softmax is the training loss's (``cfg.loss``)."""
        if bool((hidden & (items == 0)).any()):
            raise ValueError("hidden positions must hold real events, not padding")
        table = self.item_table()
        states = self.encode(items, event_types, times, query_times, table,
                             causal=False, hidden=hidden)
        return self._item_loss(states[hidden], items[hidden], table, negatives)

    def _item_loss(self, u: torch.Tensor, tgt: torch.Tensor, table: torch.Tensor,
                   negatives: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy of states ``u`` [M, d] against item indices ``tgt`` [M]."""
        if self.cfg.loss == "full":
            logits = u @ table.t()
            logits[:, 0] = _MASKED  # padding is never a target
            return F.cross_entropy(logits, tgt)
        if negatives is None:
            raise ValueError("loss='sampled' needs a negatives tensor")
        pos = (u * F.embedding(tgt, table)).sum(-1, keepdim=True)
        neg = u @ F.embedding(negatives, table).t()
        neg = torch.where(negatives.unsqueeze(0) == tgt.unsqueeze(1), _MASKED, neg)
        logits = torch.cat([pos, neg], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(tgt))

    # ---- serving ---------------------------------------------------------

    def score(
        self,
        items: torch.Tensor,
        event_types: torch.Tensor,
        times: torch.Tensor,
        query_times: torch.Tensor,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores [B, n_items + 1] for the next item after the last position.

        Column 0 (padding) is always ``-1e9``. ``table``: as in :meth:`encode`.
        """
        table = self.item_table() if table is None else table
        u = self.encode(items, event_types, times, query_times, table)[:, -1]
        scores = u @ table.t()
        pad = torch.arange(scores.shape[1], device=scores.device) == 0
        return torch.where(pad.unsqueeze(0), _MASKED, scores)

    def topk(
        self,
        items: torch.Tensor,
        event_types: torch.Tensor,
        times: torch.Tensor,
        query_times: torch.Tensor,
        exclude_mask: torch.Tensor,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` (scores, item indices) per row, never an item where
        ``exclude_mask`` [B, n_items + 1] is true nor padding.

        Rows with fewer than ``k`` allowed items end with ``-1e9`` scores; callers
        drop those.
        """
        scores = self.score(items, event_types, times, query_times)
        scores = torch.where(exclude_mask, _MASKED, scores)
        return torch.topk(scores, k=min(k, scores.shape[1] - 1), dim=1)
