"""The one exception family the project raises for problems a person must fix.

Every message is written for a person and fits on one line. `cli.py` catches
`MnistFfnError`, prints the message to stderr and exits with `exit_code`.
"""


class MnistFfnError(Exception):
    exit_code = 1


class ConfigError(MnistFfnError):
    """One or more config keys are unknown, mistyped or out of range."""

    exit_code = 2  # the code Typer uses for bad command-line usage
    SHOWN = 10  # problems the message lists; a file of thousands of unknown keys is still one readable line

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = len(problems) - self.SHOWN
        super().__init__("; ".join(problems[: self.SHOWN]) + (f"; and {more:,} more problems" if more > 0 else ""))


class DamagedFile(MnistFfnError):
    """A run's metrics.csv, summary.json or compare.json is not what mnist-ffn wrote."""


class WriteError(MnistFfnError):
    """A file could not be written (full disk, no permission, a folder in its place); the old one is intact."""


class RunFolderBusy(MnistFfnError):
    """Another process is training in this run folder."""


class UsageError(MnistFfnError):
    """Options that cannot be used together, or a run folder that would be overwritten."""

    exit_code = 2


class DataError(MnistFfnError):
    """Data files are missing, corrupt, or not the data set asked for."""


class PointsError(MnistFfnError):
    """A CSV of points (data.points) that is not rows of x1,x2,label; the message names the file and the row."""

    exit_code = 2  # the config names a file that cannot be used, as a bad config key would


class CheckpointError(MnistFfnError):
    """A file is not a loadable mnist-ffn checkpoint."""


class ImageError(MnistFfnError):
    """An input image for `predict` cannot be read."""


class TrainingDiverged(MnistFfnError):
    """The loss became NaN or infinite."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised from the signal handler where there is nothing to save first.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way can swallow it.
    """

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number


class TrainingInterrupted(MnistFfnError):
    """SIGINT or SIGTERM arrived; the run was saved and can be resumed."""

    def __init__(self, message: str, signal_number: int, stopped: str = ""):
        super().__init__(message)
        self.signal_number = signal_number
        self.stopped = stopped or message  # what stopped where, without how to go on: for a caller to add its own
        self.exit_code = 128 + signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
