"""The `charlm` command's entry point: `main` runs the app and turns every error into one line and an exit
code. The commands live beside this module, one per command, named after it; each registers on
`charlm.cli.app.app` when imported, and importing them here (in the order of --help) is what assembles the CLI.

Each command turns its flags into one library call (training.setup.train, the API's load(...).stream,
evaluate.score_run, export.model_folder.export_model, store.run_info.list_runs, ...) that works the same from
Python; what stays in a command is presentation (tables, lines, exit codes).
"""

from __future__ import annotations

import os
import sys
import time

import typer

from charlm.cli.app import app, err

# isort: off
# the commands register themselves on `app` when imported, in this order in --help
from charlm.cli import train, generate, export, perplexity, serve, neurons, plot, runs, info, data, doctor  # noqa: F401

# isort: on
from charlm.errors import CharlmError, UsageError

try:  # recent Typer carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # older Typer uses click itself
    from click import exceptions as click_errors
# click 8.2 raises this once `charlm` alone has printed the help; older click exits through click's Exit instead
NO_ARGS_IS_HELP = getattr(click_errors, "NoArgsIsHelpError", ())

RANK_0_GRACE_SECONDS = 2.0


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error becomes one line on stderr and an exit code (2 bad input, 1 failure)."""
    command = typer.main.get_command(app)
    _tidy_help(command)
    try:
        result = command.main(args=argv, prog_name="charlm", standalone_mode=False)
    except NO_ARGS_IS_HELP:  # the help is already printed
        return 0
    except click_errors.UsageError as e:
        hint = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
        err.print(f"error: {e.format_message()}{hint}", markup=False)
        return 2
    except CharlmError as e:
        if _reported_elsewhere(e):
            return e.exit_code
        err.print(f"{_rank_prefix()}{getattr(e, 'label', 'error')}: {e}", markup=False)
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted", markup=False)
        return 130
    except BrokenPipeError:  # `charlm generate ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except SystemExit as e:
        # rich meets a closed pipe (`charlm --help | head`) by pointing stdout at /dev/null and raising
        # SystemExit(1); with standalone_mode=False nothing else here exits that way: the reader left
        if e.code == 1 and os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull)):
            return 0
        raise
    except Exception as e:  # a bug or an unforeseen failure: still one line, unless debugging
        if os.environ.get("CHARLM_DEBUG"):
            raise
        err.print(
            f"{_rank_prefix()}error: unexpected {type(e).__name__}: {e} (set CHARLM_DEBUG=1 for the traceback)",
            markup=False,
        )
        return 1
    return result if isinstance(result, int) else 0


def _tidy_help(command) -> None:
    """Typer writes `<bool>` after a flag and `<list[str]>` after a repeatable option, as if a flag took a value:
    show nothing after a flag, and the item's type (with ...) after an option that can be repeated."""
    for param in getattr(command, "params", []):
        if param.param_type_name != "option" or param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif getattr(param, "multiple", False):
            param.metavar = _item_type(param) + "..."
    make_help = command.get_help_option  # --help itself is made on demand

    def help_option(ctx):
        option = make_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


def _item_type(param) -> str:
    """The type of one value of a repeatable option, as `<str>`: Typer's own click copy names it
    `<list[str]>` (display_type); Typer on click itself has the click type (param.type)."""
    display = getattr(param, "display_type", None)
    if display is not None:
        return display(None).replace("list[", "").replace("]", "").lower()
    return f"<{getattr(getattr(param, 'type', None), 'name', 'value')}>".lower()


def _rank_prefix() -> str:
    rank = os.environ.get("RANK")
    return f"[rank {rank}] " if rank and rank != "0" else ""


def _reported_elsewhere(error: CharlmError) -> bool:
    """Under torchrun, bad input and a stop by signal are the same on every rank: rank 0 says it once;
    a rank stopped by another's failure (distributed.PeerFailed) leaves the telling to that one."""
    if getattr(error, "quiet", False):
        return True
    rank = os.environ.get("RANK")
    same_everywhere = isinstance(error, UsageError) or getattr(error, "label", "") == "interrupted"
    if not (rank and rank != "0" and same_everywhere):
        return False
    if isinstance(error, UsageError):  # once this rank exits torchrun stops the others: let rank 0 print first
        time.sleep(RANK_0_GRACE_SECONDS)
    return True


def entry() -> None:
    # PyTorch's C++ log at ERROR unless the user chose a level: its warnings are not the user's business
    # (offline, every c10d connection warns that a hostname "cannot be retrieved"). Set before torch loads:
    # the level is read once, when torch is imported; torchrun's processes inherit it.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    sys.exit(main())
