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
    assert torch.equal(sparse.weight, dense.weight.detach())
    # the same vectors for every token, in the rows or not
    assert torch.equal(sparse(ids), dense(ids))
    # and the same gradient in the rows, whatever else the batch holds
    weights = torch.randn(ids.shape[1], 6)
    (dense(ids) * weights).sum().backward()
    (sparse(ids) * weights).sum().backward()
    assert torch.equal(sparse.trained.grad, dense.weight.grad[sparse.rows])
    assert sparse.rows.tolist() == sorted(set(rows) | ({padding_idx} - {None}))


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
    shared = _tiny_classifier(0)
    shared.extra = nn.Linear(16, VOCAB, bias=False)
    shared.extra.weight = shared.get_input_embeddings().weight  # another layer reads the table
    assert not embedding_rows.install(shared, rows)
    for options in ({"max_norm": 1.0}, {"sparse": True}, {"scale_grad_by_freq": True}):
        model = _tiny_classifier(0)
        model.set_input_embeddings(nn.Embedding(VOCAB, 16, padding_idx=0, **options))
        assert not embedding_rows.install(model, rows), options

    class Scaled(nn.Embedding):
        def forward(self, ids):
            return super().forward(ids) * 4.0

    model = _tiny_classifier(0)
    model.set_input_embeddings(Scaled(VOCAB, 16))
    assert not embedding_rows.install(model, rows)  # its own forward
    assert not embedding_rows.install(_tiny_classifier(0), torch.tensor([VOCAB + 3]))
    assert not embedding_rows.install(nn.Linear(3, 3), rows)  # no embeddings to name
    model = _tiny_classifier(0)
    assert embedding_rows.install(model, rows)
    assert model.get_input_embeddings().rows.tolist() == [0, 1, 2, 3]  # with the padding row


def _trainer(model, tmp_path, posts):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", learning_rate=1e-2, weight_decay=0.0)
    return hf.trainer_class(None)(model=model, args=args, train_dataset=posts)


@pytest.mark.parametrize("written, resumed", [("dense", "rows"), ("rows", "dense"), ("dense", "dense"), ("rows", "rows")])
def test_a_checkpoint_of_the_other_layout_resumes_with_the_same_moments(tmp_path, monkeypatch, written, resumed):
    """A run interrupted with one embedding layout and resumed with the other (another device,
    another number of processes, or a checkpoint from before): the Trainer loads its optimizer
    state and the moments fit the parameters, those of the rows outside being zero; resumed with
    its own layout, the moments are loaded as saved."""
    posts = hf.Posts([{"input_ids": [2, 5, 9, 0], "attention_mask": [1, 1, 1, 0], "labels": 1}, {"input_ids": [2, 7, 9, 3], "attention_mask": [1] * 4, "labels": 0}])
    rows = embedding_rows.token_rows(posts)

    class Tokenizer:
        pad_token_id = 0

    def make(layout):
        model = _tiny_classifier(0)
        if layout == "rows":
            assert embedding_rows.install(model, rows)
        trainer = _trainer(model, tmp_path / layout, posts)
        trainer.processing_class = Tokenizer()
        trainer.create_optimizer_and_scheduler(num_training_steps=4)
        return trainer

    first = make(written)
    ids = torch.tensor([posts[0]["input_ids"], posts[1]["input_ids"]])
    first.model(input_ids=ids, labels=torch.tensor([1, 0])).loss.backward()
    first.optimizer.step()
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    torch.save(first.optimizer.state_dict(), checkpoint / "optimizer.pt")
    torch.save(first.lr_scheduler.state_dict(), checkpoint / "scheduler.pt")

    second = make(resumed)
    gathered = []
    real_rows = embedding_rows.dataset_rows
    monkeypatch.setattr(embedding_rows, "dataset_rows", lambda *a: gathered.append(1) or real_rows(*a))
    second._load_optimizer_and_scheduler(str(checkpoint))
    # the training set's rows are gathered only to fit a rows checkpoint to a dense model: a
    # model holding the rows has them, and a checkpoint of its own layout fits as it is
    assert len(gathered) == (written == "rows" and resumed == "dense")
    embedding = first.model.get_input_embeddings()
    table = embedding.weight if written == "dense" else None
    moment = first.optimizer.state[table if table is not None else embedding.trained]["exp_avg"]
    target = second.model.get_input_embeddings()
    fitted = second.optimizer.state[target.trained if resumed == "rows" else target.weight]["exp_avg"]
    used = embedding_rows.trained_rows(rows, 0)
    if written == resumed:  # the same layout: the moments as they were saved
        assert torch.equal(fitted, moment)
    elif resumed == "rows":
        assert torch.equal(fitted, moment[used])
    else:
        assert fitted.shape == (VOCAB, 16) and torch.equal(fitted[used], moment)
        others = torch.ones(VOCAB, dtype=torch.bool)
        others[used] = False
        assert not fitted[others].any()
    for param, state in second.optimizer.state.items():  # every moment fits its parameter
        assert state["exp_avg"].shape == param.shape and state["exp_avg_sq"].shape == param.shape


def test_a_checkpoint_with_other_optimizer_shapes_is_refused():
    param = nn.Parameter(torch.zeros(3, 4))
    optimizer = torch.optim.AdamW([param])
    optimizer.state[param] = {"exp_avg": torch.zeros(5, 4), "exp_avg_sq": torch.zeros(5, 4), "step": torch.tensor(1.0)}
    with pytest.raises(RunError, match="cannot be resumed.*--force replaces the run"):
        hf.check_optimizer_state(optimizer, "ckpt")
    optimizer.state[param] = {"exp_avg": torch.zeros(3, 4), "exp_avg_sq": torch.zeros(3, 4), "step": torch.tensor(1.0)}
    hf.check_optimizer_state(optimizer, "ckpt")  # fits: nothing raised
