"""MLflow "models from code" entry of a registered version that carries a serving bundle.

:func:`recpipe.serve.pyfunc.bundle_code` names this file as the pyfunc's
``python_model`` (MLflow copies it into the model and runs it when loading), so the
logged model holds code rather than a pickled object. Not imported by recpipe itself.
"""

from __future__ import annotations

import mlflow

from recpipe.serve.pyfunc import BundlePyfunc

mlflow.models.set_model(BundlePyfunc())
