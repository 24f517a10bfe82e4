"""Evaluation gates and model promotion.

- :mod:`recpipe.gates.rules`: the pure gate rules (figures in, :class:`RuleResult` with
  a reason out) and :func:`~recpipe.gates.rules.decide`, which combines them into a
  :class:`GateResult`.
- :mod:`recpipe.gates.measure`: the figures the rules need that must be measured:
  in-process request latency, artifact size, the champion re-evaluated on a split.
- :mod:`recpipe.gates.report`: ``reports/gate.json`` and ``reports/gate.md``.
- :mod:`recpipe.gates.registry`: candidates as MLflow registered model versions (a
  pyfunc wrapper of the recpipe artifact) and promotion / rollback by the
  ``champion`` and ``previous`` aliases (imports MLflow; import it only where needed).
- :mod:`recpipe.gates.decide`: the gate's rule assembly: gathers the figures for the
  best candidate on the gate split (the champion re-evaluated, latency, size) and decides.
- :mod:`recpipe.gates.promote`: registering the candidates, applying the decision
  (promotion), and the choice of what the package stage serves.

The ``gate`` stage (:func:`recpipe.stages.gate`) judges through
:func:`recpipe.gates.decide.judge`; the ``register`` step (:func:`recpipe.stages.register`)
writes to the registry and moves the aliases only when the gate passed.
"""

from __future__ import annotations

from recpipe.gates.rules import ChampionFigures, GateResult, RuleResult, decide

__all__ = ["ChampionFigures", "GateResult", "RuleResult", "decide"]
