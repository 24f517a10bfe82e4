"""Hyperparameter tuning with equal budgets for candidates and baselines (Optuna).

- :mod:`recpipe.tuning.study`: one model's study on one split (TPE, seeded, RDB storage
  so a killed study resumes; pruning from the per-epoch validation metric).
- :mod:`recpipe.tuning.configs`: the tuned config files (``tuned/<split>/<model>.yaml``).
"""
