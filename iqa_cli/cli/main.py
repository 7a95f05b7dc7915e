"""The `iqa` command: Typer app with the groups prepare, train, eval, weights, al."""

from __future__ import annotations

import contextlib
import difflib
import errno
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

import typer
from typer.core import TyperGroup

from iqa_cli.cli.console import NORMAL, QUIET, STDOUT_NAME, VERBOSE, configure_logging
from iqa_cli.dependencies import unmet_requirements
from iqa_cli.envvars import TRUE, check_environment
from iqa_cli.errors import ConfigError, IQAError, Stopped
from iqa_cli.fsnames import printable, register_escape_errors
from iqa_cli.stop import Terminated, clear_stop, raise_if_stopped, request_stop, stop_requested
from iqa_cli.threads import threads_set_by_torchrun
from iqa_cli.version import __version__


def _debug_env() -> bool:
    # Lenient (no error): it decides how errors print, and `IQA_DEBUG=0` means off.
    return os.environ.get("IQA_DEBUG", "").strip().lower() in TRUE


_state = {"debug": _debug_env()}


# What signal.signal returns and takes back: a handler, SIG_DFL/SIG_IGN, or None (set outside Python).
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _say_error(line: str) -> None:
    """The one error line on stderr; a rank of a torchrun job names itself, since every rank prints
    its own (they may differ: a node without the cache), and the same line N times reads as a loop."""
    rank = os.environ.get("RANK") if _torchrun_world() > 1 else None
    line = printable(line)  # a file name's newline or escape sequence: still one line, shown as it is
    typer.echo(f"error: [rank {rank}] {line}" if rank is not None else f"error: {line}", err=True)


class ErrorHandlingGroup(TyperGroup):
    """Root group that turns any error into one clear line and a non-zero exit code.

    Sub-command invocation happens inside the root group's `invoke`, so catching here covers every
    command. `--debug` (or IQA_DEBUG=1) re-raises to show the traceback.
    """

    def invoke(self, ctx: Any) -> Any:  # typer's click Context (typer vendors click)
        clear_stop()
        previous = _terminate_cleanly()
        previous_hook = sys.unraisablehook
        if previous:
            sys.unraisablehook = _quiet_about_lost_stops(previous_hook)
        try:
            try:
                _refuse_empty_arguments(self, ctx)
                result = super().invoke(ctx)
                raise_if_stopped()  # a signal came and its exception was lost: never report success
                return result
            except Exception as exc:
                # A signal whose exception was lost, and the work went on into an error of its own (an input
                # problem found later, a write refused): the signal is what ended the job, so a scheduler
                # sees its exit code (143: preempted, requeue) rather than the error's.
                if not isinstance(exc, Stopped) and not _is_cli_control_flow(exc):
                    raise_if_stopped()
                raise
        except IQAError as exc:
            if _state["debug"]:
                traceback.print_exc()
            _say_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except Stopped as exc:  # a training stopped by a signal or its time limit, its state saved
            _say_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except Terminated:
            _say_error("terminated (SIGTERM); nothing half-written was left under a final name")
            _leave_now(143)
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            _say_error("interrupted")
            _leave_now(130)
            raise typer.Exit(130) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE and exc.filename == STDOUT_NAME:
                _reader_went_away()
                raise typer.Exit(128 + signal.SIGPIPE) from None
            if _state["debug"]:
                traceback.print_exc()
            _say_error(_os_error_line(exc))
            raise typer.Exit(74) from None
        except Exception as exc:
            if _is_usage_error(exc):  # one line, like every other error
                _say_error(_usage_line(exc))
                raise typer.Exit(2) from None
            if _is_cli_control_flow(exc):
                raise  # --help, explicit exits: the CLI framework handles these
            if _state["debug"]:
                traceback.print_exc()
            msg = " ".join(str(exc).split()) or type(exc).__name__
            # An unexpected error is often an installed package older than iqa needs: name it.
            unmet = unmet_requirements()
            below = f"; installed below iqa's requirements: {', '.join(unmet)}" if unmet else ""
            below += _address_space_cause()
            _say_error(f"{type(exc).__name__}: {msg}{below} (run `iqa --debug ...` for the traceback)")
            raise typer.Exit(1) from None
        finally:
            # A command run in-process (tests, notebooks) leaves the caller's SIGTERM handling as it was,
            # and its stop request behind it: the caller's own writes afterwards are not refused.
            for number, handler in previous.items():
                signal.signal(number, handler)
            sys.unraisablehook = previous_hook
            clear_stop()


def _reader_went_away() -> None:
    """The program reading our results closed its end (`iqa ... | head`): leave quietly with SIGPIPE's
    code, as a shell tool killed by it does, and point standard output at /dev/null so that the
    interpreter's last flush does not print an error of its own."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _address_space_cause() -> str:
    """For an unforeseen error: a virtual memory limit, which native libraries meet with errors of their own
    ("could not create a primitive", "failed to map segment"), is named as a likely cause."""
    from iqa_cli.memory import address_space_limited

    limited = address_space_limited()
    return "" if limited is None else f"; {limited}, which may be the cause"


def _refuse_empty_arguments(group: Any, ctx: Any) -> None:
    """ConfigError for an empty argument (`--root ""`, `--out=`, `iqa predict vtiqa ""`): a path option would
    read it as the current folder, so `--root $DATA` with DATA unset in a batch script would go on with
    whatever folder the job started in. No option or argument of iqa takes an empty value."""
    args = [*(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []), *ctx.args]
    why = "(an unset shell variable?): nothing in iqa takes an empty value"
    for index, token in enumerate(args):
        if token.startswith("--") and token.endswith("=") and len(token) > 3:
            raise ConfigError(f"{token[:-1]}: empty value {why}")
        if token != "":
            continue
        before = args[index - 1] if index else ""
        if before.startswith("-") and _takes_value(group, ctx, args[:index], before):
            raise ConfigError(f"{before}: empty value {why}")
        raise ConfigError(f"an empty argument{f' after {before!r}' if before else ''} {why}")


def _takes_value(group: Any, ctx: Any, args: list[str], option: str) -> bool:
    """Whether `option` of the (sub)command named at the start of `args` takes a value (not a flag)."""
    command = group
    for token in args:
        if token.startswith("-") or not hasattr(command, "get_command"):
            break
        found = command.get_command(ctx, token)
        if found is None:
            break
        command = found
    for param in getattr(command, "params", []):
        if option in getattr(param, "opts", ()) and not getattr(param, "is_flag", False):
            return True
    return False


_OS_HINTS = {
    errno.ENOSPC: "free some space, or write elsewhere",
    errno.EDQUOT: "free some space, or write elsewhere",
    errno.EFBIG: "the file outgrew a size limit (`ulimit -f`, or the file system's): raise it, or write elsewhere",
    errno.EACCES: "choose a place you may write to, or fix the permissions",
    errno.EPERM: "choose a place you may write to, or fix the permissions",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.ELOOP: "a symbolic link loops; remove or fix it",
    errno.EMFILE: "this process may open no more files: raise the limit (`ulimit -n`), or use fewer workers (-j)",
    errno.ENFILE: "the system may open no more files: close some programs, or use fewer workers (-j)",
    errno.ENAMETOOLONG: "use a shorter path",
}


def _os_error_line(exc: OSError) -> str:
    """`<file>: <what happened>; <what to do>` for an operating-system error, naming the user's file."""
    from iqa_cli.atomic import WRITE_REFUSED, user_path

    # A copy the file system refused (shutil names the source first, the destination second): name the file
    # that could not be written.
    refused = exc.errno in WRITE_REFUSED and exc.filename2 is not None
    where = user_path(exc.filename2 if refused else exc.filename)
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    hint = _OS_HINTS.get(exc.errno or -1)
    text = f"{where}: {reason}" if where else reason
    return f"{text}; {hint}" if hint else text


def _leave_now(code: int) -> None:
    """After a signal, a standalone `iqa` exits without interpreter teardown: every file and lock was
    already cleaned up while the exception unwound, and tearing down native libraries (HDF5) that a
    signal interrupted mid-call can crash the process after its error line (exit -11 instead of 143).
    In-process callers (tests, notebooks) get the normal `typer.Exit`."""
    if _state.get("standalone"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _raise_terminated(signum: int, frame: object) -> None:
    request_stop("SIGTERM")  # remembered too: the exception can be lost where a library discards errors
    raise Terminated()


def _raise_interrupted(signum: int, frame: object) -> None:
    request_stop("SIGINT")  # Python's own Ctrl-C handler, remembered for the same reason
    raise KeyboardInterrupt()


def _terminate_cleanly() -> dict[int, SignalHandler]:
    """Install the SIGTERM and SIGINT handlers; returns the ones they replaced (none off the main thread).

    Training installs its own SIGTERM handler while it runs (save and stop at a step boundary)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, SignalHandler] = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored Ctrl-C stays ignored
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupted)
    return previous


def _quiet_about_lost_stops(report: Callable[[Any], object]) -> Callable[[Any], object]:
    """`sys.unraisablehook` that drops the report of a stop exception Python discarded (the signal came while
    a destructor or a weak-reference callback ran): the request is remembered and the command stops with its
    one error line, so "Exception ignored in ... Traceback" would be a traceback the user never asked for.
    Every other discarded error is still reported by `report`; `--debug` reports them all."""

    def hook(unraisable: Any) -> None:
        lost_stop = isinstance(unraisable.exc_value, KeyboardInterrupt) and stop_requested()
        if not lost_stop or _state["debug"]:
            report(unraisable)

    return hook


def _is_usage_error(exc: BaseException) -> bool:
    """click's UsageError family (bad option, missing argument, unknown command), vendored or not."""
    return _is_cli_control_flow(exc) and any(c.__name__ == "UsageError" for c in type(exc).__mro__)


def _usage_line(exc: Any) -> str:
    """`--epcohs: no such option; did you mean --epochs?` and the like, on one line."""
    name = type(exc).__name__
    if name == "NoSuchOption":
        option = getattr(exc, "option_name", "?")
        possible = list(getattr(exc, "possibilities", None) or [])
        closest = difflib.get_close_matches(str(option), possible, n=1, cutoff=0.0) if possible else []
        hint = f"; did you mean {closest[0]}?" if closest else " (see --help)"
        return f"{option}: no such option{hint}"
    text = " ".join(str(exc.format_message()).split())
    command = getattr(getattr(exc, "ctx", None), "command_path", "")
    return f"{command}: {text}" if command and name != "NoSuchOption" else text


def _is_cli_control_flow(exc: BaseException) -> bool:
    # Typer >= 0.29 vendors click under typer._click; older Typer uses click itself. Both raise their
    # own Exit/Abort/usage exceptions, which must pass through untouched.
    module = type(exc).__module__
    return module.startswith(("typer", "click"))


app = typer.Typer(
    rich_markup_mode=None,
    cls=ErrorHandlingGroup,
    name="iqa",
    help="Blind image quality assessment research toolkit: prepare datasets, train, evaluate, manage weights.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"iqa {__version__}")
        raise typer.Exit()


# Commands that join a torchrun job's process group (DDP training). Any other command started by torchrun
# would run once per rank: N copies of the same evaluation, N JSON documents on one stdout, N processes
# racing for one cache. It runs once instead, in rank 0, as a plain process.
_TORCHRUN_COMMANDS = frozenset({"train"})
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                       "ROLE_RANK", "ROLE_WORLD_SIZE")  # fmt: skip


# Commands that build networks with torch: those a virtual memory limit (`ulimit -v`) is said to.
_TORCH_COMMANDS = frozenset({"train", "eval", "predict", "demo", "al"})


def _torchrun_world() -> int:
    """WORLD_SIZE of the torchrun job this process is a rank of (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def _once_under_torchrun(command: str | None) -> None:
    """Under torchrun (WORLD_SIZE > 1): torchrun's one-thread default is dropped (iqa shares the cores itself);
    a command that does not train runs once: ranks other than 0 leave at once (exit 0), and rank 0 forgets
    the job's variables, so it runs as one process with every core."""
    world = _torchrun_world()
    try:
        rank = int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return
    if world <= 1:
        return
    if threads_set_by_torchrun():
        # torchrun's guard for several ranks on a node: iqa's thread policy shares the node's cores among
        # its ranks itself (`iqa_cli.threads`), and a command that runs alone, below, has them all.
        os.environ.pop("OMP_NUM_THREADS", None)
    if command in _TORCHRUN_COMMANDS:
        return
    if rank != 0:
        raise typer.Exit(0)
    for name in _TORCHRUN_VARIABLES:
        os.environ.pop(name, None)
    logging.getLogger("iqa_cli.cli").info(
        f"iqa {command} runs as one process: rank 0 of this torchrun job does the work, the other "
        f"{world - 1} rank(s) leave at once"
    )


@app.callback()
def root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only warnings and errors: no progress bars or messages."),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Also the debugging messages (chosen data path, threads)."
    ),
) -> None:
    """iqa: blind image quality assessment, from dataset download to evaluated model."""
    _state["debug"] = debug or _debug_env()
    if quiet and verbose:
        raise typer.BadParameter("-q/--quiet and -v/--verbose contradict each other")
    configure_logging(QUIET if quiet else VERBOSE if verbose else NORMAL)
    check_environment()  # a bad IQA_* value fails every command before its work
    _once_under_torchrun(ctx.invoked_subcommand)
    if ctx.invoked_subcommand in _TORCH_COMMANDS:
        from iqa_cli.memory import address_space_note

        note = address_space_note()
        if note is not None:
            logging.getLogger("iqa_cli.cli").warning(note)


def _register() -> None:
    # Imported here so each group stays in its own module and the app is assembled in one place.
    from iqa_cli.cli import al as al_cli
    from iqa_cli.cli import demo as demo_cli
    from iqa_cli.cli import eval as eval_cli
    from iqa_cli.cli import models as models_cli
    from iqa_cli.cli import predict as predict_cli
    from iqa_cli.cli import prepare as prepare_cli
    from iqa_cli.cli import runs as runs_cli
    from iqa_cli.cli import train as train_cli
    from iqa_cli.cli import weights as weights_cli

    app.add_typer(prepare_cli.app, name="prepare")
    app.add_typer(train_cli.app, name="train")
    app.add_typer(eval_cli.app, name="eval")
    app.add_typer(weights_cli.app, name="weights")
    app.add_typer(al_cli.app, name="al")
    app.add_typer(runs_cli.app, name="runs")
    models_cli.register(app)
    predict_cli.register(app)
    demo_cli.register(app)


_register()


def main() -> None:  # pragma: no cover - run by `iqa_cli.cli.entry` (the `iqa` console script, `python -m iqa_cli`)
    _state["standalone"] = True
    # A terminal or log that cannot show a character (an ASCII or Latin-1 locale, PYTHONIOENCODING=ascii)
    # gets it escaped: a table naming `café.jpg` ended the command after its work, as an internal error.
    # In the C locale without UTF-8 mode the streams are "surrogateescape", which fails on any other
    # character (a table's dagger); a file name's undecodable bytes still go out as they were.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and stream.errors in ("strict", "surrogateescape"):
            stream.reconfigure(errors=register_escape_errors())
    in_torchrun_job = _torchrun_world() > 1  # read first: a command that does not train drops the variables
    try:
        app(prog_name="iqa")
    except SystemExit as exc:
        if not in_torchrun_job:
            raise
        # A rank of a torchrun job leaves without interpreter teardown, as after a signal: its process group
        # is already destroyed and every file closed, and tearing down torch's native threads at exit now and
        # then aborted a finished rank ("terminate called without an active exception", exit -6), which
        # torchrun reports as a failed job.
        _leave_now(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))


if __name__ == "__main__":  # pragma: no cover
    main()
