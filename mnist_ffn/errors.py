"""The one exception family the project raises for problems a person must fix.

Every message is written for a person and fits on one line. `cli.py` catches
`MnistFfnError`, prints the message to stderr and exits with `exit_code`.
"""


class MnistFfnError(Exception):
    exit_code = 1


class ConfigError(MnistFfnError):
    """One or more config keys are unknown, mistyped or out of range."""

    exit_code = 2  # the code Typer uses for bad command-line usage

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class UsageError(MnistFfnError):
    """Options that cannot be used together, or a run folder that would be overwritten."""

    exit_code = 2


class DataError(MnistFfnError):
    """Data files are missing, corrupt, or not the data set asked for."""


class CheckpointError(MnistFfnError):
    """A file is not a loadable mnist-ffn checkpoint."""


class ImageError(MnistFfnError):
    """An input image for `predict` cannot be read."""


class TrainingDiverged(MnistFfnError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(MnistFfnError):
    """SIGINT or SIGTERM arrived; the run was saved and can be resumed."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
