"""DeepFM (Guo et al. 2017, "DeepFM: A Factorization-Machine based Neural Network for
CTR Prediction").

A factorization machine (first-order weights plus pairwise inner products of the field
embeddings) and an MLP that share ONE embedding table, trained on implicit feedback;
logit = linear + FM + deep.

The inputs, training, scoring and artifact are those of every CTR model
(:mod:`recpipe.models.ctr`); this module holds the FM part and the model's config.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from recpipe.models.ctr import CtrConfig, CtrInputs, CtrNet, CtrRecommender, ItemTable, UserTable
from recpipe.models.layers import FMInteraction
from recpipe.models.space import Choice, Float, Int, SearchSpace

__all__ = ["DeepFM", "DeepFMConfig", "DeepFMNet"]


class DeepFMConfig(CtrConfig):
    """Options of :class:`DeepFM`."""


class DeepFMNet(CtrNet):
    """First-order weights + FM pairwise term + deep MLP over ONE set of field embeddings."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fm = FMInteraction()

    def forward(self, inputs: CtrInputs) -> torch.Tensor:
        """(B,) logits: linear + FM + deep."""
        v = self.fields(inputs)
        return self.first_order(inputs) + self.fm(v) + self.deep(v, inputs.dense)

    def _pair_terms(
        self, users: UserTable, items: ItemTable, item_fields: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        user_term = self.linear.bias_value() + self.linear.field(0, users.users)
        # FM(user, item fields) = <e_user, sum of item fields> + FM(item fields)
        item_term = self._item_first_order(items) + self.fm(item_fields)
        return user_term.float(), item_term.float()

    def _chunk_terms(
        self,
        users: UserTable,
        items: ItemTable,
        item_fields: torch.Tensor,
        start: int,
        stop: int,
    ) -> torch.Tensor:
        e_user = self.embed.field(0, users.users)
        return (e_user @ item_fields[start:stop].sum(dim=1).t()).float()


class DeepFM(CtrRecommender):
    """DeepFM (Guo et al. 2017) on implicit feedback; see the module docstring."""

    name: ClassVar[str] = "deepfm"
    search_space: ClassVar[SearchSpace] = {
        "embedding_dim": Choice((16, 32, 64)),
        "learning_rate": Float(1e-4, 1e-2, log=True),
        "dropout": Float(0.0, 0.5),
        "l2": Float(1e-6, 1e-3, log=True),
        "negatives": Int(1, 16, log=True),
    }
    Config: ClassVar[type[DeepFMConfig]] = DeepFMConfig

    def _build_module(self) -> DeepFMNet:
        return DeepFMNet(**self._net_args())
