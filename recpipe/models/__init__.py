"""Models behind one contract, and the registry that names them.

Import what you need from its module; this package imports nothing, so that importing
one module (e.g. the contract) never pulls in the models, their baselines or torch.

==============================  ===========================================================
:mod:`~recpipe.models.base`     the contract: :class:`~recpipe.models.base.Recommender`,
                                :class:`~recpipe.models.base.ModelConfig`,
                                :class:`~recpipe.models.base.NotFittedError`
:mod:`~recpipe.models.data`     what a model sees: ``DataMeta``, ``Interactions``,
                                ``Queries``, ``QUERY_KINDS``, ``CONTEXT_COLUMNS``
:mod:`~recpipe.models.artifact` the artifact directory a model saves (``write_artifact``,
                                ``read_artifact``) and the array files of its state
                                (``save_arrays``, ``load_arrays``, ``csr_to_arrays``, ...)
:mod:`~recpipe.models.registry` ``MODELS`` (name -> class), ``get_model``,
                                ``build_model``, ``load_model`` (any model's artifact)
:mod:`~recpipe.models.sparse`   sparse-matrix helpers shared by models and baselines
building blocks                 ``layers`` (MLP, FM, embeddings), ``hashed`` (hashed
                                embeddings), ``embedding`` (item aggregation), ``losses``,
                                ``session_losses``, ``torch_base`` (models trained by the
                                shared loop), ``ctr`` (the CTR models' shared parts),
                                ``content`` (the content tower), ``coldstart`` (routing)
one model per file              ``mf``, ``wide_deep``, ``deepfm``, ``gru4rec``,
                                ``content2cf``, ``content2vec``; the baselines are in
                                :mod:`recpipe.baselines`
==============================  ===========================================================

>>> from recpipe.models.registry import MODELS, get_model
>>> get_model("pop") is MODELS["pop"]
True
"""
