"""The generic training loop shared by every torch model: device, AMP, checkpoints, stopping."""
