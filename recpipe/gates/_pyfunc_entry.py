"""MLflow "models from code" entry of a registered version without a serving bundle.

:meth:`recpipe.gates.registry.Registry.register` logs this file as the pyfunc's
``python_model`` (MLflow copies it into the model and runs it when loading), so the
logged model holds code rather than a pickled object. Not imported by recpipe itself.
"""

from __future__ import annotations

import mlflow

from recpipe.gates.registry import RecpipePyfunc

mlflow.models.set_model(RecpipePyfunc())
