"""Training on CPUs nearer the hardware's limit, with the same training: dropout's masks drawn 4x faster.

On a CPU, ``torch.nn.functional.dropout`` draws its mask with ``bernoulli_``, one 64-bit draw of
the Mersenne Twister per element on one thread (torch takes a vectorised MKL path only on Intel
CPUs, where the gain here may be small; measured on an AMD EPYC):
about 4 ns per element, a quarter of a MiniLM training step on tweet-length posts (20 masks per
step, 6 of them over the attention probabilities, batch x heads x length x length). Here a
64-bit draw of the same generator gives four 16-bit numbers, each kept with probability
``1 - p`` (``p`` rounded to a multiple of 1/65536: 0.1 becomes 0.100006), so a mask costs about a
quarter of that: the same distribution, not the same masks as torch's for a seed. The masks come
from torch's default generator, seeded by the ``Trainer``, so the same seed gives the same masks,
and a resumed run restores them with the generator's state.

``install(model)`` puts this dropout in place of every ``nn.Dropout`` of the model and, for a
model with scaled-dot-product attention, computes the attention of a training step with its
dropout here too: torch's fused CPU attention kernels take no dropout, so with dropout torch
computes attention in plain operations anyway (``_scaled_dot_product_attention_math``), with a
``bernoulli_`` mask. Everywhere else (evaluation, prediction, CUDA) nothing changes.
"""

from __future__ import annotations

import torch
from torch import nn

#: The attention implementation ``install`` registers with transformers' ``AttentionInterface``.
ATTENTION = "smm4h_sdpa"
_LEVELS = 1 << 16


def keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A dropout mask the shape of ``like``: ``1 / (1 - p)`` where kept (probability ``1 - p``), else 0.

    Four 16-bit numbers from every 64-bit draw of torch's default generator: an element is
    dropped where its number is among the lowest ``round(p * 65536)`` of the 65,536.
    """
    n = like.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-(2**63), None)
    numbers = bits.view(torch.int16)[:n].view(like.shape)  # uniform on [-32768, 32767]
    threshold = min(round(p * _LEVELS), _LEVELS - 1) - _LEVELS // 2
    return (numbers >= threshold).to(like.dtype).mul_(1.0 / (1.0 - p))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``torch.nn.functional.dropout``, with ``keep_mask``'s faster mask on a CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return nn.functional.dropout(x, p, training)
    return x * keep_mask(x, p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same ``p``, same ``state_dict``) drawing its mask with ``keep_mask`` on a CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)


#: the keywords of ``sdpa_attention_forward`` that change what it computes: T5's relative
#: position bias, a paged cache, a softcap (refused there).
_SDPA_READS = ("position_bias", "cache", "softcap")


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """transformers' ``sdpa`` attention, except in a CPU training step with dropout: there the
    operations torch's math path runs (scores, mask, softmax, dropout, weighted sum), in fp32 as
    it computes them (bf16 inputs too), with ``keep_mask``'s dropout. Causal and grouped-query
    attention, and any call with an argument ``sdpa`` reads beyond the mask (``_SDPA_READS``:
    T5's ``position_bias``, a softcap), always go to ``sdpa``. Other keywords (the
    ``num_items_in_batch`` the ``Trainer`` passes down, ``position_ids``) ``sdpa`` ignores too."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    extra = any(kwargs.get(k) is not None for k in _SDPA_READS)
    causal = kwargs.get("is_causal")
    plain = (
        dropout == 0.0 or not module.training or query.device.type != "cpu" or extra
        or (getattr(module, "is_causal", True) if causal is None else causal) or key.shape[1] != query.shape[1]
    )
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    dtype = value.dtype
    with torch.autocast("cpu", enabled=False):
        query, key, value = query.float(), key.float(), value.float()
        scores = torch.matmul(query * scaling, key.transpose(2, 3))
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(attention_mask.logical_not(), torch.finfo(scores.dtype).min)
            else:
                scores = scores + attention_mask
        weights = torch.softmax(scores, dim=-1)
        weights = weights * keep_mask(weights, dropout)
        return torch.matmul(weights, value).to(dtype).transpose(1, 2).contiguous(), None


def install(model: nn.Module) -> nn.Module:
    """``model`` with ``Dropout`` for every ``nn.Dropout`` and, where it uses ``sdpa`` attention,
    ``attention`` for it. Parameters, ``state_dict`` and saved configuration are unchanged."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                replacement = Dropout(child.p, child.inplace)
                replacement.train(child.training)
                setattr(parent, name, replacement)
    config = getattr(model, "config", None)
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa" and can_switch is not None and can_switch():
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

        AttentionInterface.register(ATTENTION, attention)
        # the padding masks sdpa gets: without a mask function of its own, an attention
        # implementation gets no mask at all
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
        model.set_attn_implementation(ATTENTION)
    return model
