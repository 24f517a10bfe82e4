"""Baselines behind the model contract: popularity, item-kNN, Markov / sequential rules.

"Watch your baselines": every candidate model is gated against the best of these.
The classes are registered in :data:`recpipe.models.registry.MODELS`; import them from their
modules (this package imports nothing, so that importing one baseline stays cheap).
"""
