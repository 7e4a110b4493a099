"""What a training run shows a person while it runs: its phases, progress bars while features
are computed and epochs run, and a line per finished phase; and keeping the libraries' own
chatter (TensorFlow's C++ logs, known warnings, progress bars) off the terminal.

train() reports to a Progress; the default, SILENT, shows nothing (tests, library use), and the
command line passes a ConsoleProgress. Keras' own progress output is off either way
(training.tracking.KerasProgress drives the bars instead).
"""

import contextlib
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

Advance = Callable[..., None]
"""advance(steps=1, **status): move a bar on, with a status line such as the epoch's loss."""


class Progress:
    """Reports nothing (the interface, and the default)."""

    @contextlib.contextmanager
    def phase(self, title: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda steps=1, **status: None

    def done(self, message: str) -> None:
        pass


SILENT = Progress()


class ConsoleProgress(Progress):
    """Phases and bars on a rich console. quiet: what libraries print to stderr while a phase
    runs is kept back, and shown only if the phase fails."""

    def __init__(self, console: Console, quiet: bool = True):
        self.console = console
        self.quiet = quiet

    @contextlib.contextmanager
    def phase(self, title: str) -> Iterator[None]:
        started = time.perf_counter()
        kept_back = io.StringIO()
        redirect = contextlib.redirect_stderr(kept_back) if self.quiet else contextlib.nullcontext()
        try:
            with self.console.status(f"{title} ..."), redirect:
                yield
        except BaseException:
            sys.stderr.write(kept_back.getvalue())
            raise
        seconds = time.perf_counter() - started
        self.console.print(f"[green]✓[/green] {title} [dim]({seconds:.1f} s)")

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator[Advance]:
        columns = (
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
        )
        # A bar means nothing in a log file or a pipe: there, only the phase lines are shown.
        hidden = not self.console.is_terminal
        with RichProgress(*columns, console=self.console, transient=True, disable=hidden) as bars:
            task = bars.add_task(description, total=total, status="")

            def advance(steps: int = 1, **status: float) -> None:
                text = "  ".join(f"{name} {value:.4f}" for name, value in status.items())
                bars.update(task, advance=steps, status=text)

            yield advance

    def done(self, message: str) -> None:
        self.console.print(f"  {message}")


# Libraries whose Python warnings and INFO logs say nothing a person training a model can act on.
CHATTY_LIBRARIES = ("mlflow", "keras", "tensorflow", "tf2onnx", "absl", "h5py", "bentoml")


def quiet_libraries(tensorflow: bool = True) -> None:
    """Silence TensorFlow's C++ logs and the libraries' known warnings and INFO logs (the
    command line calls this unless --verbose). Call it before TensorFlow is imported;
    tensorflow=True imports it here, while its import-time lines can be silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    pattern = "|".join(CHATTY_LIBRARIES)
    warnings.filterwarnings("ignore", module=rf"({pattern})(\.|$)")
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    if tensorflow:
        with native_stderr_silenced():
            # TensorFlow logs a few lines at import, before it reads TF_CPP_MIN_LOG_LEVEL.
            import keras  # imports TensorFlow
        keras.utils.disable_interactive_logging()


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C and C++ code writes to file descriptor 2 to /dev/null for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
