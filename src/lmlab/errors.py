"""Typed errors. Every error a user can cause derives from `LmlabError`; the CLI prints its
message (which names the file, line or field and what to do) instead of a traceback, and exits
with the class's `exit_code` (the README's "Exit status" line lists them): 2 for bad input or
configuration, 3 when training diverged (`lmlab.train.guard.TrainingDiverged`), 4 when the
device is full (`DiskFull`), 5 when another rank of a torchrun run stopped answering or ended
(`lmlab.train.distributed.PeerLost`)."""


class LmlabError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in lmlab."""

    exit_code = 2


class ConfigError(LmlabError, ValueError):
    """A config field is unknown, mistyped or out of range; the message names the field."""


class ArtifactError(LmlabError):
    """An artifact directory is missing, incomplete, or of the wrong kind."""


class ArtifactCorrupt(ArtifactError):
    """A file's bytes disagree with its manifest, or a weights file cannot be parsed."""


class CheckpointMismatch(ArtifactError):
    """Stored weights or config disagree with the model they are loaded into."""


class DiskFull(LmlabError, OSError):
    """No space (or quota) left while writing; the message names what was being written and
    what was left as it was."""

    exit_code = 4


class UnsafeFormat(LmlabError):
    """Refused to read a format that can execute code (pickle) without explicit consent."""


class DataError(LmlabError, ValueError):
    """Input data (a corpus, an evaluation file) is empty or malformed; the message names the
    file and line."""


class UnknownWord(DataError, KeyError):
    """A queried word is not in a vocabulary."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
