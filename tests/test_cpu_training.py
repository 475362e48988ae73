"""training.cpu: the same dropout as torch's (the same distribution), its mask drawn faster on a
CPU; installed in the embedded MiniLM it changes nothing outside a training step, and inside one
it drops at the same rate, reproducibly, with attention computed as torch's math path does."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from smm4h_cli.training import cpu


def test_keep_mask_keeps_one_minus_p_and_scales_what_it_keeps():
    torch.manual_seed(0)
    x = torch.empty(1_000_000)
    for p in (0.1, 0.5, 0.9):
        mask = cpu.keep_mask(x, p)
        kept = mask != 0
        assert torch.unique(mask).tolist() == [0.0, pytest.approx(1 / (1 - p), rel=1e-6)]
        sd = math.sqrt(p * (1 - p) / x.numel())
        assert abs(kept.float().mean().item() - (1 - p)) < 5 * sd  # within five standard errors
        # no structure: the four 16-bit numbers of one 64-bit draw are independent
        lanes = kept.view(-1, 4).float().mean(0)
        assert torch.all((lanes - (1 - p)).abs() < 5 * 2 * sd)


def test_keep_mask_is_the_seeds_and_follows_the_generator():
    x = torch.empty(3, 5, 7)
    torch.manual_seed(3)
    a = cpu.keep_mask(x, 0.1)
    b = cpu.keep_mask(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(cpu.keep_mask(x, 0.1), a)
    assert not torch.equal(a, b)  # the generator moved on
    assert a.shape == x.shape and a.dtype == x.dtype


@given(st.floats(min_value=1e-4, max_value=0.999), st.integers(min_value=1, max_value=300))
def test_keep_mask_values_are_zero_or_the_scale(p, n):
    torch.manual_seed(n)
    mask = cpu.keep_mask(torch.empty(n, dtype=torch.bfloat16), p)
    scale = torch.tensor(1 / (1 - p), dtype=torch.bfloat16)
    assert bool(((mask == 0) | (mask == scale)).all())


def test_dropout_is_torchs_outside_training_and_its_gradient_is_the_mask():
    x = torch.randn(64, 32, requires_grad=True)
    layer = cpu.Dropout(0.1)
    layer.eval()
    assert layer(x) is x
    layer.train()
    torch.manual_seed(1)
    y = layer(x)
    torch.manual_seed(1)
    mask = cpu.keep_mask(x, 0.1)
    assert torch.equal(y, x * mask)
    y.sum().backward()
    assert torch.equal(x.grad, mask)
    assert torch.equal(cpu.dropout(x, 0.0, True), x)


def test_install_keeps_weights_and_predictions_and_trains_reproducibly():
    from smm4h_cli.models import minilm_path
    from smm4h_cli.training import hf

    plain, tokenizer = hf.load_classifier(str(minilm_path()), new_head_seed=0)
    fast, _ = hf.load_classifier(str(minilm_path()), new_head_seed=0)
    cpu.install(fast)
    assert not any(type(m) is torch.nn.Dropout for m in fast.modules())
    assert sum(isinstance(m, cpu.Dropout) for m in fast.modules()) == sum(type(m) is torch.nn.Dropout for m in plain.modules())
    assert fast.config._attn_implementation == cpu.ATTENTION
    assert fast.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))

    batch = tokenizer(["my head hurts since the new pills", "fine", "slept badly, dizzy all day and nauseous"], padding=True, return_tensors="pt")
    plain.eval(), fast.eval()
    with torch.no_grad():
        assert torch.allclose(fast(**batch).logits, plain(**batch).logits, atol=1e-6)

    fast.train()
    labels = torch.tensor([1, 0, 1])

    def loss_and_grad(seed, **trainer_kwargs):
        torch.manual_seed(seed)
        fast.zero_grad()
        loss = fast(**batch, labels=labels, **trainer_kwargs).loss
        loss.backward()
        return loss.item(), fast.classifier.weight.grad.clone()

    masks = []
    real_keep_mask = cpu.keep_mask

    def counted(like, p):
        masks.append(tuple(like.shape))
        return real_keep_mask(like, p)

    heads = fast.config.num_attention_heads
    # called as the Trainer calls it too: it passes num_items_in_batch down to the attention
    for trainer_kwargs in ({}, {"num_items_in_batch": torch.tensor(3)}):
        masks.clear()
        cpu.keep_mask = counted
        try:
            loss_and_grad(7, **trainer_kwargs)
        finally:
            cpu.keep_mask = real_keep_mask
        attention_masks = [m for m in masks if len(m) == 4 and m[1] == heads]
        assert len(attention_masks) == fast.config.num_hidden_layers, trainer_kwargs  # every layer's attention on the fast path
        assert len(masks) == sum(isinstance(m, cpu.Dropout) for m in fast.modules()) - fast.config.num_hidden_layers + len(attention_masks)

    first, again, other = loss_and_grad(7), loss_and_grad(7), loss_and_grad(8)
    assert first[0] == again[0] and torch.equal(first[1], again[1])
    as_trainer = loss_and_grad(7, num_items_in_batch=torch.tensor(3))  # the same path, the same masks
    assert first[0] == as_trainer[0] and torch.equal(first[1], as_trainer[1])
    assert first[0] != other[0]  # dropout is on: another seed, other masks

    # a training step at a rate too small to drop anything: the padded posts see their padding
    # masked exactly as in torch's own attention
    for model, p in ((fast, 1e-7), (plain, 0.0)):
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = p
    plain.train()
    with torch.no_grad():
        assert torch.allclose(fast(**batch).logits, plain(**batch).logits, atol=1e-5)


def test_training_attention_is_sdpas_with_the_masks_dropout():
    """With a dropout rate too small to drop anything, the training path (scores, padding mask,
    softmax, mask, weighted sum) computes what torch's sdpa computes without dropout."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    module = torch.nn.Module()
    module.is_causal = False
    module.train()
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    padding = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    padding[1, :, :, 4:] = False  # the second sequence's last two tokens are padding
    for mask in (None, padding):
        ours, _ = cpu.attention(module, q, k, v, mask, dropout=1e-7, scaling=0.3)
        module.eval()
        reference, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=0.3)
        module.train()
        assert ours.shape == reference.shape == (2, 6, 4, 8)
        assert torch.allclose(ours, reference, atol=1e-5)
    # bf16 (autocast's) inputs: computed in fp32 as torch's math path computes them
    from torch.nn.attention import SDPBackend, sdpa_kernel

    qb, kb, vb = (t.to(torch.bfloat16) for t in (q, k, v))
    ours, _ = cpu.attention(module, qb, kb, vb, padding, dropout=1e-7, scaling=0.3)
    with sdpa_kernel(SDPBackend.MATH):
        math = torch.nn.functional.scaled_dot_product_attention(qb, kb, vb, attn_mask=padding, scale=0.3).transpose(1, 2)
    assert ours.dtype == torch.bfloat16
    assert (ours.float() - math.float()).abs().max() <= 2 ** -8 * math.float().abs().max()  # within bf16's rounding
    # arguments the fast path does not know (T5's relative position bias) go to sdpa
    bias = torch.randn(1, 4, 6, 6)
    ours, _ = cpu.attention(module, q, k, v, None, dropout=1e-7, scaling=0.3, position_bias=bias)
    module.eval()
    reference, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0, scaling=0.3, position_bias=bias)
    module.train()
    assert torch.allclose(ours, reference, atol=1e-5)
    torch.manual_seed(0)
    dropped, _ = cpu.attention(module, q, k, v, padding, dropout=0.5, scaling=0.3)
    assert not torch.allclose(dropped, reference, atol=1e-3)  # at 0.5 it does drop

