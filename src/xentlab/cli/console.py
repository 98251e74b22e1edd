"""What a user sees on the terminal: TensorFlow's native start-up noise filtered out, expected errors as one
readable block (no traceback), and one summary line per finished run."""

from __future__ import annotations

import atexit
import functools
import math
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from xentlab.errors import ExpectedError
from xentlab.metric_table import summary_metrics

# Lines TensorFlow's C++ side writes to stderr at start-up on every machine, GPU or not. They are not about the
# user's run: absl's pre-initialisation notice, oneDNN and CUDA-stub notes (I-lines), `cuInit` failing on
# machines without a GPU (an E-line that reads like an error), and grappler's NodeDef attribute warnings.
# Any other line, E-lines included, passes through.
NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} \S+ +\d+ \S+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
    r"|[EW]\d{4} \S+ +\d+ \S+\] (failed call to cuInit|Unable to register cu\w+ factory"
    r"|computation placer already registered|.*NodeDef mentions attribute"
    r"|.*TF-TRT Warning|.*could not find cuda drivers|.*Could not find TensorRT)"
    r"|.*NodeDef mentions attribute \w+ which is not in the op definition)"
)
END_OF_STDERR = b"\0xentlab: end of stderr\0"  # what the filter's last write is, at exit
SHOW_ENV = "XENTLAB_NATIVE_LOGS"  # =1 shows every native line (debugging TensorFlow itself)
_installed = False


def is_native_noise(line: str) -> bool:
    return bool(NATIVE_NOISE.match(line))


def quiet_native_logs() -> None:
    """Routes this process's stderr (file descriptor 2, where TensorFlow's C++ code writes) through a filter
    that drops the known start-up noise and passes everything else on, line by line, as it comes.

    TF_CPP_MIN_LOG_LEVEL cannot do this: the start-up lines are written before TensorFlow reads it, and level 3
    would also hide real errors. Python's own warnings and MLflow's INFO chatter are quietened here too.
    """
    global _installed
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # MLflow's INFO notes (store creation, system-metrics start/stop); read when mlflow is first imported.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if _installed or os.environ.get(SHOW_ENV) == "1":
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no usable stderr (a daemon): nothing to filter
        return
    _installed = True

    def pump() -> None:
        with open(read_end, "rb", buffering=0) as source:
            pending = b""
            while chunk := source.read(65536):
                pending, ended, _ = (pending + chunk).partition(END_OF_STDERR)
                *lines, pending = pending.split(b"\n")
                out = [ln for ln in lines if not is_native_noise(ln.decode("utf-8", "replace"))]
                if out:
                    os.write(original, b"\n".join(out) + b"\n")
                if ended:
                    break
            if pending and not is_native_noise(pending.decode("utf-8", "replace")):
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="xentlab-stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        # Hand fd 2 back to the terminal; the pump drains what this process wrote, up to the marker. Not up to
        # the pipe's end: child processes that outlive this one (a process pool's helpers) hold it open.
        try:
            sys.stderr.flush()
            os.write(2, END_OF_STDERR)  # one write, shorter than the pipe's atomic size: never split
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)
        thread.join(timeout=2.0)

    atexit.register(restore)


# The end-of-run line shows what a reader scans, in this order, at most HEADLINE_SIZE of them; every metric is in
# MLflow (the line ends with the run's link).
HEADLINE = summary_metrics()  # the metric table's order
HEADLINE_SIZE = 5


def headline(results: dict[str, float]) -> dict[str, float]:
    """The few test metrics of `results` that the end-of-run line prints (an undefined one, NaN, is left out: the
    run has said why)."""
    shown = [name for name in HEADLINE if name in results and not math.isnan(results[name])][:HEADLINE_SIZE]
    return {name: results[name] for name in shown}


CHANCE_MARGIN = 0.02  # "at chance": every validation signal within this of what guessing scores


def chance_warning(history: dict[str, list[float]], num_classes: int) -> str | None:
    """A sentence when the last epoch's validation metrics are at chance level, else None.

    At chance: `val_auc` <= 0.5 + CHANCE_MARGIN and `val_balanced_accuracy` <= 1/K + CHANCE_MARGIN, each where
    logged (both for a classifier; a model without either is not judged). A constant prediction scores exactly
    0.5 and 1/K: what a diverged optimizer that did not reach NaN leaves (learning_rate=1e6 ends so, FINISHED).
    """
    last = {name: values[-1] for name, values in history.items() if values}
    chance = {"val_auc": 0.5, "val_balanced_accuracy": 1.0 / num_classes}
    judged = {name: (float(last[name]), level) for name, level in chance.items() if name in last}
    if not judged or any(not math.isfinite(v) or v > level + CHANCE_MARGIN for v, level in judged.values()):
        return None
    values = ", ".join(f"{name}={v:.3f} (chance {level:.3f})" for name, (v, level) in judged.items())
    return (f"the final validation metrics are at chance level ({values}): the model predicts no better than a "
            f"guess. A learning rate far too high (or too low) usually does this: try another "
            f"optimizer.learning_rate, more trainer.epochs, or check that the labels match the features")


def warn_at_chance(history: dict[str, list[float]], num_classes: int, outbox, warnings: list[str]) -> None:
    """`chance_warning` on stderr and in the run tag xentlab.warning (after the run's earlier `warnings`)."""
    from xentlab.tracking.store import WARNING_TAG

    warning = chance_warning(history, num_classes)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
        outbox.set_tag(WARNING_TAG, "\n".join([*warnings, warning]))


def is_expected(err: BaseException) -> bool:
    """Errors about the user's input: exactly the subclasses of `xentlab.errors.ExpectedError`. Anything else is a
    bug, wherever it was raised, and keeps its traceback."""
    return isinstance(err, ExpectedError)


TRAIN_HINT = "(HYDRA_FULL_ERROR=1 or trainer.debug=true shows the traceback)"
COMMAND_HINT = "(HYDRA_FULL_ERROR=1 shows the traceback)"  # the same switch for every command


def error_block(err: BaseException, *, run: str | None = None, hint: str = TRAIN_HINT) -> str:
    """The block printed for an expected error: what went wrong (the message names the key, what was expected
    and the fix), which run was marked FAILED, and how to see the traceback."""
    from xentlab.tracking.store import mask_text

    lines = ["", f"xentlab: {type(err).__name__}", *[f"  {ln}" for ln in mask_text(str(err)).splitlines()]]
    if run:
        lines.append(f"  The MLflow run {run} is marked FAILED with this message.")
    lines.append(f"  {hint}")
    return "\n".join(lines) + "\n"


def command(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int | None]:
    """A console command's `main(argv)` with xentlab-train's error handling: an expected error
    (xentlab.errors.ExpectedError) prints the same block and exits 2, any other error prints its traceback with
    credentials masked and exits 1. What `main` returns is the exit status."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int | None:
        with reported_errors(debug=False, multirun=False, run_ref=[], hint=COMMAND_HINT):
            return main(argv)

    return run


@dataclass
class Failure:
    """What `reported_errors` caught in a multirun job (None: the job did not fail)."""

    error: BaseException | None = None


STOP_EXIT = {"SIGTERM": 143, "Ctrl-C": 130}  # 128 + the signal's number, as a shell reports a process it stopped


def signal_name(err: BaseException) -> str:
    return "Ctrl-C" if isinstance(err, KeyboardInterrupt) else "SIGTERM"


def saved_by(run_ref: list[str], checkpoint: list) -> str:
    """What an interrupted job left behind: its run, KILLED, and its newest checkpoint (xentlab.tracking.resume)."""
    from xentlab.tracking.resume import UNIT

    if not run_ref:
        return "no run was open"
    folder = checkpoint[0] if checkpoint else None
    epochs = sorted(int(m.group(1)) for p in (folder.glob("epoch-*") if folder else []) if (m := UNIT.match(p.name)))
    kept = (f"its checkpoint after epoch {epochs[-1]} is kept in {folder}" if epochs else
            "no epoch had completed, so it starts again from epoch 1")
    return f"run {run_ref[0]} is KILLED; {kept}"


def stopped_line(err: BaseException, argv: list[str]) -> str:
    """The one line printed when SIGTERM or Ctrl-C stops `xentlab-train`: what was saved and the command that
    resumes it (the same command: trainer.resume=auto continues the run, a sweep continues its parent)."""
    import shlex

    from xentlab.masking import mask_override

    command = " ".join(["xentlab-train", *[shlex.quote(mask_override(a)) for a in argv]])
    saved = getattr(err, "xentlab_saved", None) or "no run was open"
    return f"xentlab: stopped by {signal_name(err)}: {saved}. Resume with: {command}"


@contextmanager
def stopped_in_one_line(argv: list[str]) -> Iterator[None]:
    """SIGTERM (what Slurm and Kubernetes send) or Ctrl-C: one line on stderr instead of a traceback, and the
    shell's exit status for the signal. The run is already KILLED (xentlab.tracking.runs.tracked_run)."""
    try:
        yield
    except BaseException as err:
        from xentlab.tracking.resume import Terminated  # here: importing it loads MLflow

        if not isinstance(err, (Terminated, KeyboardInterrupt)) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from xentlab.tracking.store import mask_text

        sys.stderr.write("\n" + mask_text(stopped_line(err, argv)) + "\n")
        sys.stderr.flush()
        raise SystemExit(STOP_EXIT[signal_name(err)]) from None


@contextmanager
def reported_errors(*, debug: bool, multirun: bool, run_ref: list[str], checkpoint: list | None = None,
                    hint: str = TRAIN_HINT) -> Iterator[Failure]:
    """Turns an expected error of a single run into the error block and exit status 2; any other error into its
    traceback (credentials masked) and exit status 1.

    In a multirun the job's error is printed the same way (the block, or the traceback of a bug) and recorded in the
    yielded `Failure`, not raised: a launcher would stop the sweep at the first raised error (Hydra's basic one
    does), while the sweep's other jobs and its report must go on. `run_ref` is filled by the runner with the run's
    name and id once it has one, `checkpoint` with its checkpoint folder: what SIGTERM or Ctrl-C leaves is noted on
    the interrupt for the one line `stopped_in_one_line` prints.
    """
    failure = Failure()
    try:
        yield failure
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from xentlab.tracking.store import mask_text

        run = run_ref[0] if run_ref else None
        if debug or not is_expected(err):
            # A bug (or a traceback asked for): the traceback, with credentials masked. Hydra's own report
            # would print the job's overrides, passwords included.
            text = mask_text("".join(traceback.format_exception(err)))
            note = f"The MLflow run {run} is marked FAILED.\n" if run else ""
            sys.stderr.write(text + note)
            sys.stderr.flush()
            code = 1
        else:
            sys.stderr.write(error_block(err, run=run, hint=hint))
            sys.stderr.flush()
            code = 2
        if multirun:
            failure.error = err
            return
        raise SystemExit(code) from None
    except BaseException as err:  # SIGTERM or Ctrl-C: what it left is noted for the one line, then on its way
        if not isinstance(err, (SystemExit, GeneratorExit)):
            err.xentlab_saved = saved_by(run_ref, checkpoint or [])
        raise
