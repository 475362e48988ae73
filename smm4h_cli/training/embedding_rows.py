"""Training only the word-embedding rows a training set uses: the same training, less work per step.

A word embedding's gradient is zero in every row whose token is not in the training set: those
rows never change. With no weight decay AdamW leaves them exactly as they are (its moments stay
zero, so its update is 0 / eps = 0), and gradient clipping does not see them (they add nothing
to the norm). Yet a dense embedding makes every step pay for all of them: MiniLM's 30,522 x 384
table (11.7M of its 22.7M parameters) gets a 47 MB gradient that is allocated, filled, clipped
and fed to AdamW with its two 47 MB moments, each step, while PsyTAR's training split uses 4,557
of the tokens (15%).

``install(model, token_ids)`` puts a ``RowsEmbedding`` in place of the input embedding: a
parameter holding only the used rows (``trained``) and a frozen buffer for the whole table. The
optimizer, the clipping and the gradient cover the used rows only. The model's ``state_dict`` is
an ``nn.Embedding``'s (one ``weight``, the whole table with the trained rows in place), so
checkpoints, the best model the ``Trainer`` loads back and the saved model are unchanged in
format, and the numbers are those of the dense training but for the rounding of the clipping
norm (a sum over fewer zeros).

Not installed (returns False) where the rows of unused tokens would change (weight decay), or
where the embedding is not a plain ``nn.Embedding`` used once (tied to an output layer, a
``max_norm``, sparse gradients, gradients scaled by frequency). A checkpoint written with the
other layout (dense, or other processes) resumes: ``fit_optimizer_state`` gives its AdamW moments
the shape of the parameters (the moments of the rows left out are zero).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class RowsEmbedding(nn.Module):
    """``embedding`` with only ``rows`` trainable (``trained``); the other rows are a frozen buffer.

    Looks up like ``embedding`` (tokens outside ``rows`` read the frozen table) and saves and loads
    the same ``state_dict`` (``weight``: the whole table).
    """

    def __init__(self, embedding: nn.Embedding, rows: torch.Tensor):
        super().__init__()
        weight = embedding.weight.detach()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx = embedding.padding_idx
        rows = trained_rows(rows, self.padding_idx)
        remap = torch.full((self.num_embeddings,), -1, dtype=torch.long)
        remap[rows] = torch.arange(len(rows))
        self.register_buffer("rows", rows.to(weight.device), persistent=False)
        self.register_buffer("remap", remap.to(weight.device), persistent=False)
        self.register_buffer("frozen", weight.clone(), persistent=False)
        self.trained = nn.Parameter(weight[self.rows].clone(), requires_grad=embedding.weight.requires_grad)
        self._padding_row = None if self.padding_idx is None else int(remap[self.padding_idx])

    @property
    def weight(self) -> torch.Tensor:
        """The whole table, trained rows in place (a new tensor, outside autograd)."""
        table = self.frozen.clone()
        table[self.rows] = self.trained.detach()
        return table

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        index = self.remap[input_ids]
        out = nn.functional.embedding(index.clamp(min=0), self.trained, self._padding_row)
        unseen = index < 0  # tokens the training set does not hold (an evaluation post's)
        if bool(unseen.any()):
            out = torch.where(unseen.unsqueeze(-1), nn.functional.embedding(input_ids, self.frozen), out)
        return out

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        weight = state_dict[key]
        if tuple(weight.shape) != tuple(self.frozen.shape):
            error_msgs.append(f"size mismatch for {key}: copying {tuple(weight.shape)} into {tuple(self.frozen.shape)}.")
            return
        with torch.no_grad():
            self.frozen.copy_(weight)
            self.trained.copy_(self.frozen[self.rows])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, trained rows={len(self.rows)}"


def token_rows(examples: Iterable[dict], extra: Iterable[int | None] = ()) -> torch.Tensor:
    """Every token id the examples' ``input_ids`` hold, and ``extra`` (the collator's padding)."""
    ids = {int(i) for example in examples for i in example["input_ids"]}
    ids.update(int(i) for i in extra if i is not None)
    return torch.tensor(sorted(ids), dtype=torch.long)


def dataset_rows(dataset, tokenizer) -> torch.Tensor:
    """The rows a training set's batches look up: its tokens and the collator's padding."""
    return token_rows(dataset, [getattr(tokenizer, "pad_token_id", None)])


def trained_rows(rows: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
    """The rows a ``RowsEmbedding`` holds: ``rows`` and the padding row (looked up in every padded
    batch, never trained), sorted."""
    rows = rows.to(torch.long).flatten().cpu()
    if padding_idx is not None:
        rows = torch.cat([rows, torch.tensor([padding_idx])])
    return torch.unique(rows)


def _embeddings(model: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """``model``'s input and output embeddings; None for a layout transformers cannot name."""
    def get(name: str):
        try:
            return getattr(model, name)() if hasattr(model, name) else None
        except NotImplementedError:
            return None

    return get("get_input_embeddings"), get("get_output_embeddings")


def install(model: nn.Module, rows: torch.Tensor, weight_decay: float = 0.0) -> bool:
    """Put a ``RowsEmbedding`` training ``rows`` in place of ``model``'s input embedding, where it
    trains the same as the dense one; True if installed."""
    embedding, output = _embeddings(model)
    if weight_decay != 0.0 or type(embedding) is not nn.Embedding or embedding.max_norm is not None:
        return False
    if embedding.sparse or embedding.scale_grad_by_freq:
        return False
    if output is not None or sum(p is embedding.weight for _, p in model.named_parameters(remove_duplicate=False)) != 1:
        return False  # tied, or tiable, to an output layer, or serving another layer too
    if len(rows) == 0 or int(rows.min()) < 0 or int(rows.max()) >= embedding.num_embeddings:
        return False
    model.set_input_embeddings(RowsEmbedding(embedding, rows))
    return True


def fit_optimizer_state(optimizer, model: nn.Module, rows: torch.Tensor | Callable[[], torch.Tensor]) -> None:
    """AdamW moments of a checkpoint written with the other embedding layout, in the shape of
    ``model``'s: the dense moments' ``rows`` for a ``RowsEmbedding``; for a dense embedding, the
    rows' moments in a zero table (a row outside ``rows`` never had a gradient, so its moments
    are zero). ``rows``: what ``install`` was given (the padding row is added as it adds it), or
    a function computing it, called only where a dense embedding has moments of the rows layout
    to fit (a ``RowsEmbedding`` holds its rows; a dense checkpoint's moments fit as they are)."""
    embedding, _ = _embeddings(model)
    if isinstance(embedding, RowsEmbedding):
        param, known = embedding.trained, embedding.rows
    elif type(embedding) is nn.Embedding:
        param, known = embedding.weight, None
    else:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p is not param:
                continue
            state = optimizer.state.get(p, {})
            for key, moment in list(state.items()):
                if not torch.is_tensor(moment) or moment.dim() != 2 or moment.shape == p.shape or moment.shape[1] != p.shape[1]:
                    continue
                if known is None:
                    known = trained_rows(rows() if callable(rows) else rows, embedding.padding_idx)
                index = known.to(moment.device)
                if isinstance(embedding, RowsEmbedding) and moment.shape[0] == embedding.num_embeddings:
                    state[key] = moment[index].clone()
                elif not isinstance(embedding, RowsEmbedding) and moment.shape[0] == len(known):
                    table = moment.new_zeros(p.shape)
                    table[index] = moment
                    state[key] = table
