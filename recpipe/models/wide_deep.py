"""Wide & Deep (Cheng et al. 2016, "Wide & Deep Learning for Recommender Systems").

A linear model over sparse ids and hashed cross-product features (memorisation) plus
an MLP over embeddings and dense features (generalisation), trained jointly on
implicit feedback; logit = wide + deep. The wide crosses, hashed into
``n_cross_buckets`` with :func:`recpipe.features.inputs.hash_cross` (``hash_seed``;
serving rebuilds them from the config), are ``user x popularity bucket`` always and
``user x category`` when the items have categories.

The inputs, training, scoring and artifact are those of every CTR model
(:mod:`recpipe.models.ctr`); this module holds the wide part and the model's config.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from recpipe.models.ctr import CtrConfig, CtrInputs, CtrNet, CtrRecommender, ItemTable, UserTable
from recpipe.models.layers import Bag, LinearWide
from recpipe.models.space import Choice, Float, Int, SearchSpace

__all__ = ["WideAndDeep", "WideAndDeepNet", "WideDeepConfig"]


class WideDeepConfig(CtrConfig):
    """Options of :class:`WideAndDeep`."""

    n_cross_buckets: int = Field(
        default=1 << 18, ge=1, description="size of the hashed space of the wide crosses"
    )
    hash_seed: int = Field(default=0, description="seed of the cross hash")
    learning_rate: float = Field(
        default=3e-3,
        gt=0,
        description="Adam step (the wide part's sparse weights learn faster with a larger one)",
    )


def _chunk_bag(bag: Bag, indptr: torch.Tensor, start: int, stop: int) -> Bag:
    """Rows ``start:stop`` of a bag whose row pointer is ``indptr``."""
    lo, hi = int(indptr[start]), int(indptr[stop])
    weights = None if bag.weights is None else bag.weights[lo:hi]
    return Bag(bag.indices[lo:hi], indptr[start:stop] - lo, weights)


class WideAndDeepNet(CtrNet):
    """Wide (linear over ids and hashed crosses) plus deep (MLP over embeddings) parts.

    Parameters
    ----------
    n_cross_buckets : int
        Size of the hashed cross space of the wide part.
    **kwargs
        As :class:`CtrNet`.
    """

    def __init__(self, *args: Any, n_cross_buckets: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cross = LinearWide([], bag_size=n_cross_buckets, bias=False)

    def forward(self, inputs: CtrInputs) -> torch.Tensor:
        """(B,) logits: wide (ids + crosses) + deep."""
        if inputs.crosses is None:
            raise ValueError("wide_deep needs the cross features (inputs.crosses)")
        wide = self.first_order(inputs) + self.cross(bag=inputs.crosses)
        return wide + self.deep(self.fields(inputs), inputs.dense)

    def _pair_terms(
        self, users: UserTable, items: ItemTable, item_fields: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        user_term = self.linear.bias_value() + self.linear.field(0, users.users)
        return user_term.float(), self._item_first_order(items).float()

    def _chunk_terms(
        self,
        users: UserTable,
        items: ItemTable,
        item_fields: torch.Tensor,
        start: int,
        stop: int,
    ) -> torch.Tensor:
        weight = self.cross.bag_weight()
        assert users.popularity_cross is not None
        g_pop = weight[users.popularity_cross]  # (B, P)
        out = g_pop[:, items.popularity_bucket[start:stop]]
        if self.has_categories:
            assert users.category_cross is not None and items.categories is not None
            assert items.indptr is not None
            g_cat = weight[users.category_cross]  # (B, C)
            rows = _chunk_bag(items.categories, items.indptr, start, stop)
            # (stop - start, B): each item's weighted sum of its categories' columns
            per_item = nn.functional.embedding_bag(
                rows.indices,
                g_cat.t().contiguous(),
                rows.offsets,
                mode="sum",
                per_sample_weights=rows.weights,
            )
            out = out + per_item.t()
        return out.float()


class WideAndDeep(CtrRecommender):
    """Wide & Deep (Cheng et al. 2016) on implicit feedback; see the module docstring."""

    name: ClassVar[str] = "wide_deep"
    search_space: ClassVar[SearchSpace] = {
        "embedding_dim": Choice((16, 32, 64)),
        "learning_rate": Float(1e-4, 1e-2, log=True),
        "dropout": Float(0.0, 0.5),
        "l2": Float(1e-6, 1e-3, log=True),
        "negatives": Int(1, 16, log=True),
    }
    Config: ClassVar[type[WideDeepConfig]] = WideDeepConfig
    _uses_crosses: ClassVar[bool] = True

    def _build_module(self) -> WideAndDeepNet:
        return WideAndDeepNet(**self._net_args(), n_cross_buckets=self.config.n_cross_buckets)
