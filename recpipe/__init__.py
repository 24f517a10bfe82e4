"""recpipe: a workflow-orchestrated MLOps pipeline for deep-learning recommender systems."""

__version__ = "0.1.0"
