"""The registered model names and where each model's class lives, importing nothing.

A new model joins the registry with one line in :data:`ENTRIES`. Checking names (params,
``--model``) needs only this module; :mod:`recpipe.models.registry` imports a class the
first time its name is asked for.
"""

from __future__ import annotations

#: Every registered model: ``{name: "module:Class"}``, baselines first.
ENTRIES: dict[str, str] = {
    "pop": "recpipe.baselines.popularity:Popularity",
    "recent_pop": "recpipe.baselines.popularity:RecentPopularity",
    "itemknn": "recpipe.baselines.itemknn:ItemKNN",
    "markov": "recpipe.baselines.markov:MarkovChain",
    "sr": "recpipe.baselines.markov:SequentialRules",
    "sknn": "recpipe.baselines.sknn:SessionKNN",
    "stan": "recpipe.baselines.stan:STAN",
    "als": "recpipe.baselines.implicit_mf:ALS",
    "bpr": "recpipe.baselines.implicit_mf:BPR",
    "bias": "recpipe.baselines.bias:BiasBaseline",
    "category_pop": "recpipe.baselines.category_pop:CategoryPopularity",
    "context_pop": "recpipe.baselines.context_pop:ContextPopularity",
    "ease": "recpipe.baselines.ease:EASE",
    "rp3beta": "recpipe.baselines.rp3beta:RP3beta",
    "mf_explicit": "recpipe.models.mf:MFExplicit",
    "mf_bce": "recpipe.models.mf:MFBCE",
    "mf_bpr": "recpipe.models.mf:MFBPR",
    "mf_wals": "recpipe.models.mf:MFWeighted",
    "wide_deep": "recpipe.models.wide_deep:WideAndDeep",
    "deepfm": "recpipe.models.deepfm:DeepFM",
    "gru4rec": "recpipe.models.gru4rec:GRU4Rec",
    "gru4rec_ctx": "recpipe.models.gru4rec:ContextualGRU4Rec",
    "sasrec": "recpipe.models.sasrec:SASRec",
    "content2cf": "recpipe.models.content2cf:Content2CF",
    "content2vec": "recpipe.models.content2vec:Content2Vec",
}
#: The registered names (no model imported).
NAMES: tuple[str, ...] = tuple(ENTRIES)
