"""The errors a user can cause. Each message says what is wrong and, where it can, what to change."""


class HiggsBenchError(Exception):
    """Base class: the command-line tools print these without a traceback and exit non-zero."""


class CheckpointError(HiggsBenchError):
    """A model directory that is missing, incomplete, corrupt or of an unknown layout."""


class PromptError(HiggsBenchError):
    """Text or reference audio that cannot be turned into a prompt for this model."""


class GenerationError(HiggsBenchError):
    """Generation settings that cannot work (frame limit, sampling parameters, batch limits)."""


class OutputError(HiggsBenchError):
    """A folder or file that results cannot be written to, or that holds something we must not overwrite."""


class ConfigError(HiggsBenchError):
    """A configuration that cannot run; the message names the setting to change."""


class DamagedArtefact(HiggsBenchError):
    """A file a build kept that no longer holds what the build wrote (found as it loads); the engine is built
    again."""
