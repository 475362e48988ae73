"""training.embedding_rows: a word embedding trained only in the rows of the training set's tokens
looks up, trains, saves and loads as the dense ``nn.Embedding`` does."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from smm4h_cli.errors import RunError
from smm4h_cli.training import embedding_rows, hf
from smm4h_cli.training.embedding_rows import RowsEmbedding

VOCAB = 40


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=VOCAB, unique=True),
    st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=30),
    st.sampled_from([None, 0, 7]),
)
def test_lookup_and_gradient_are_the_dense_embeddings(rows, ids, padding_idx):
    torch.manual_seed(0)
    dense = nn.Embedding(VOCAB, 6, padding_idx=padding_idx)
    sparse = RowsEmbedding(dense, torch.tensor(rows))
    ids = torch.tensor(ids).view(1, -1)
    # the same vectors for every token, in the rows or not
    assert torch.equal(sparse(ids), dense(ids))
    # a token in the rows gets the dense gradient in its row; the whole table is the dense one
    trained_ids = ids[torch.isin(ids, sparse.rows)].view(1, -1)
    if trained_ids.numel():
        weights = torch.randn(trained_ids.shape[1], 6)
        (dense(trained_ids) * weights).sum().backward()
        (sparse(trained_ids) * weights).sum().backward()
        assert torch.equal(sparse.trained.grad, dense.weight.grad[sparse.rows])
        outside = torch.ones(VOCAB, dtype=torch.bool)
        outside[sparse.rows] = False
        assert not dense.weight.grad[outside].any()  # the rows left out get nothing
    assert torch.equal(sparse.weight, dense.weight.detach())


def _tiny_classifier(seed: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2,
    )
    return BertForSequenceClassification(config)


def _train(model, batches, steps: int) -> None:
    """AdamW (fused, as the Trainer's default), clipping at 1, as the Trainer steps."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0, fused=True)
    model.train()
    for step in range(steps):
        ids, labels = batches[step % len(batches)]
        model(input_ids=ids, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_training_the_rows_is_training_the_dense_embedding(tmp_path):
    from transformers import AutoModelForSequenceClassification

    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randint(1, 25, (4, 9), generator=generator), torch.tensor([0, 1, 1, 0])) for _ in range(3)]
    batches[0][0][:, 6:] = 0  # padding
    dense, sparse = _tiny_classifier(0), _tiny_classifier(0)
    start = dense.get_input_embeddings().weight.detach().clone()
    rows = embedding_rows.token_rows({"input_ids": ids.flatten().tolist()} for ids, _ in batches)
    assert embedding_rows.install(sparse, rows)
    assert isinstance(sparse.get_input_embeddings(), RowsEmbedding)
    assert dense.state_dict().keys() == sparse.state_dict().keys()
    _train(dense, batches, 12)
    _train(sparse, batches, 12)

    after = sparse.state_dict()
    for key, value in dense.state_dict().items():  # the same numbers, up to the rounding of the clipping norm
        assert torch.allclose(after[key], value, rtol=1e-5, atol=1e-6), key
    table = after["bert.embeddings.word_embeddings.weight"]
    unused = torch.ones(VOCAB, dtype=torch.bool)
    unused[rows] = False
    assert torch.equal(table[unused], start[unused])  # exactly as they were
    assert not torch.equal(table[rows], start[rows])
    # the optimizer held the rows only
    assert sparse.get_input_embeddings().trained.shape == (len(rows), 16)

    # saved as a plain model, loaded back as one with the same weights and outputs
    sparse.save_pretrained(tmp_path / "saved")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    assert type(loaded.get_input_embeddings()) is nn.Embedding
    unseen = torch.tensor([[2, 30, 31, 39, 0]])  # tokens outside the rows too
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=unseen).logits, sparse.eval()(input_ids=unseen).logits, atol=1e-6)
        assert torch.allclose(loaded(input_ids=unseen).logits, dense.eval()(input_ids=unseen).logits, atol=1e-5)

    # a state_dict loaded into the rows' embedding (the Trainer loading its best checkpoint)
    fresh = _tiny_classifier(5)
    embedding_rows.install(fresh, rows)
    fresh.load_state_dict(loaded.state_dict())
    assert torch.equal(fresh.get_input_embeddings().trained, table[fresh.get_input_embeddings().rows])
    assert torch.equal(fresh.get_input_embeddings().weight, table)


def test_install_only_where_the_other_rows_never_change():
    from transformers import BertConfig, BertForMaskedLM

    rows = torch.tensor([1, 2, 3])
    assert not embedding_rows.install(_tiny_classifier(0), rows, weight_decay=0.01)  # decay moves every row
    tied = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    assert not embedding_rows.install(tied, rows)  # an output layer shares the table
    assert type(tied.get_input_embeddings()) is nn.Embedding
    assert not embedding_rows.install(_tiny_classifier(0), torch.tensor([VOCAB + 3]))
    model = _tiny_classifier(0)
    assert embedding_rows.install(model, rows)
    assert sorted(model.get_input_embeddings().rows.tolist()) == [0, 1, 2, 3]  # with the padding row


def test_a_checkpoint_with_other_optimizer_shapes_is_refused():
    param = nn.Parameter(torch.zeros(3, 4))
    optimizer = torch.optim.AdamW([param])
    optimizer.state[param] = {"exp_avg": torch.zeros(5, 4), "exp_avg_sq": torch.zeros(5, 4), "step": torch.tensor(1.0)}
    with pytest.raises(RunError, match="cannot be resumed.*another version of smm4h"):
        hf.check_optimizer_state(optimizer, "ckpt")
    optimizer.state[param] = {"exp_avg": torch.zeros(3, 4), "exp_avg_sq": torch.zeros(3, 4), "step": torch.tensor(1.0)}
    hf.check_optimizer_state(optimizer, "ckpt")  # fits: nothing raised
