"""The errors a user can cause. Each message says what is wrong and, where it can, what to change."""


class HiggsBenchError(Exception):
    """Base class: the command-line tools print these without a traceback and exit non-zero."""


class CheckpointError(HiggsBenchError):
    """A model directory that is missing, incomplete, corrupt or of an unknown layout."""


class PromptError(HiggsBenchError):
    """Text or reference audio that cannot be turned into a prompt for this model."""


class GenerationError(HiggsBenchError):
    """Generation settings that cannot work (frame limit, sampling parameters, batch limits)."""
