"""Training only the word-embedding rows a training set uses: the same training, less work per step.

A word embedding's gradient is zero in every row whose token is not in the training set: those
rows never change. With no weight decay AdamW leaves them exactly as they are (its moments stay
zero, so its update is 0 / eps = 0), and gradient clipping does not see them (they add nothing
to the norm). Yet a dense embedding makes every step pay for all of them: MiniLM's 30,522 x 384
table (11.7M of its 22.7M parameters) gets a 47 MB gradient that is zeroed, filled, clipped and
fed to AdamW with its two 47 MB moments, each step, while PsyTAR's training split uses 4,557 of
the tokens (15%).

``install(model, token_ids)`` puts a ``RowsEmbedding`` in place of the input embedding: a
parameter holding only the used rows (``trained``) and a frozen buffer for the whole table. The
optimizer, the clipping and the gradient cover the used rows only. The model's ``state_dict`` is
an ``nn.Embedding``'s (one ``weight``, the whole table with the trained rows in place), so
checkpoints, the best model the ``Trainer`` loads back and the saved model are unchanged in
format, and the numbers are those of the dense training but for the rounding of the clipping
norm (a sum over fewer zeros).

Not installed (returns False) where the rows of unused tokens would change (weight decay), or
where the embedding is not a plain ``nn.Embedding`` used once (tied to an output layer, a
``max_norm``, sparse gradients).
"""

from __future__ import annotations

from collections.abc import Iterable

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
        self.scale_grad_by_freq = embedding.scale_grad_by_freq
        rows = torch.unique(rows.to(torch.long).flatten().cpu())
        if self.padding_idx is not None:  # looked up in every padded batch; never trained
            rows = torch.unique(torch.cat([rows, torch.tensor([self.padding_idx])]))
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
        out = nn.functional.embedding(
            index.clamp(min=0), self.trained, self._padding_row, scale_grad_by_freq=self.scale_grad_by_freq
        )
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


def token_rows(examples: Iterable[dict]) -> torch.Tensor:
    """Every token id the examples' ``input_ids`` hold."""
    ids = sorted({int(i) for example in examples for i in example["input_ids"]})
    return torch.tensor(ids, dtype=torch.long)


def install(model: nn.Module, rows: torch.Tensor, weight_decay: float = 0.0) -> bool:
    """Put a ``RowsEmbedding`` training ``rows`` in place of ``model``'s input embedding, where it
    trains the same as the dense one; True if installed."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if weight_decay != 0.0 or type(embedding) is not nn.Embedding or embedding.max_norm is not None or embedding.sparse:
        return False
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None or sum(p is embedding.weight for _, p in model.named_parameters(remove_duplicate=False)) != 1:
        return False  # tied, or tiable, to an output layer, or serving another layer too
    if len(rows) == 0 or int(rows.min()) < 0 or int(rows.max()) >= embedding.num_embeddings:
        return False
    model.set_input_embeddings(RowsEmbedding(embedding, rows))
    return True
