"""Document-isolated packing.

Packing (TRL's best-fit-decreasing, ``packing_strategy: bfd``/``bfd_split``) concatenates documents
into rows of ``max_length`` and switches the collator to *padding-free* batches: no
``attention_mask``, ``position_ids`` restarting at 0 at each document, and ``cu_seq_lens``.

How isolation is obtained on each backend:

- flash-attention (varlen): the kernels read ``cu_seq_lens``; nothing to add.
- sdpa / eager / flex: transformers' ``create_causal_mask`` turns restarting ``position_ids`` into a
  block-diagonal causal mask, **but only when no cache object is passed**. A forward with the config
  default ``use_cache=True`` creates a ``DynamicCache`` first, and the packed documents then attend to
  one another silently. Every forward of our trainers passes ``use_cache=False`` and
  :func:`check_isolation_supported` rejects backends that would ignore the boundaries.

``tests/test_packing.py`` checks, on sdpa and eager in fp32, that the logits of a packed row equal
those of each document run alone within 1e-4, and that the cache-on path is *not* isolated (so the
test can fail).
"""

from __future__ import annotations

from collections.abc import Sequence

ISOLATING_BACKENDS = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3", "kernels-community")


def attention_backend(model) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) or "eager"


def check_isolation_supported(model) -> None:
    backend = attention_backend(model)
    if not any(backend.startswith(b) for b in ISOLATING_BACKENDS):
        raise ValueError(
            f"attention backend {backend!r} is not known to isolate packed documents; use sdpa, eager, flex_attention "
            "or flash_attention_2/3, or set packing: false"
        )


def packing_efficiency(seq_lengths: Sequence[int], max_length: int) -> float:
    """Fraction of real tokens in rows of ``max_length``: sum(lengths) / (rows * max_length)."""
    rows = len(seq_lengths)
    return float(sum(seq_lengths)) / (rows * max_length) if rows else 0.0
