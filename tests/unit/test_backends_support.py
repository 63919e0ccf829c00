"""Shared builders for the export and backend tests (no tests here): a small time- and
text-aware model that has seen a few training steps, so its biases are not the zero init."""

from __future__ import annotations

import torch
from recstream.inference.backends.parity import probe_inputs
from recstream.inference.model import ModelConfig, SeqRecModel

N_ITEMS = 300
MAX_LEN = 24
K = 10


def small_model(seed: int = 0, steps: int = 8, **config: object) -> SeqRecModel:
    """All features on; random text table; some cold (text-only) items; time biases
    randomised (they start at zero) and a few Adam steps of next-item training.
    ``config``: other ``ModelConfig`` fields. The age bias is in every layer unless
    ``config`` says otherwise: the serving graph's heaviest path, the full layers'
    ``[B, L, L]`` ages, is the one parity must cover (the default, "last", has
    tests of its own)."""
    torch.manual_seed(seed)
    config.setdefault("age_bias_layers", "all")
    cfg = ModelConfig(n_items=N_ITEMS, max_len=MAX_LEN, d_model=32, n_heads=2, n_layers=2,
                      text_dim=16, dropout=0.0, **config)  # type: ignore[arg-type]
    model = SeqRecModel(cfg)
    with torch.no_grad():
        model.set_item_text(torch.randn(N_ITEMS + 1, cfg.text_dim))
        model.id_mask[-20:] = 0.0  # cold items: text only
        torch.nn.init.normal_(model.age_bias.weight, std=0.5)
        torch.nn.init.normal_(model.short_age.weight, std=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch, _ = probe_inputs(N_ITEMS, MAX_LEN, batch=32, seed=100 + step)
        targets = torch.roll(batch.items, -1, dims=1)
        targets[:, -1] = 0
        loss = model(batch.items, batch.event_types, batch.times, batch.query_times, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


#: (batch, length) pairs every parity test covers: dynamic batch and length.
SHAPES = [(1, 1), (1, 3), (7, 3), (7, MAX_LEN), (16, MAX_LEN)]
