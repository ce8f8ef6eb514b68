"""The error of a checkpoint that cannot be used, shared by the checkpoint modules."""


class CheckpointError(ValueError):
    """A file that cannot be loaded as a checkpoint; the message names it and says why."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint that loads but does not fit the model (parameters missing, extra or of
    another shape); the message lists them."""
