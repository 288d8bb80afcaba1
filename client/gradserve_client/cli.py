"""The ``gradserve`` command: values and derivatives of math expressions from a terminal.

    gradserve eval "sin(x)**2" --at x=0.7
    gradserve grad "ln(sin(x**3)**2)" --at x=0.7
    gradserve jacobian "[ln(x**2), sin(3*x)]" --at x=0.7 --json
    gradserve ops | gradserve health | gradserve serve --port 50051

Every command except ``serve`` talks to a server (``--server``, default ``$GRADSERVE_TARGET``
or 127.0.0.1:50051) and prints readably, or JSON with ``--json``. Errors are one line on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from ._common import DEFAULT_TARGET
from .client import Client
from .errors import GradserveError, Unavailable
from .expr import ExprError, parse_expression, parse_value

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A user error, reported as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gradserve`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit
    status. ``serve`` replaces this process with ``python -m gradserve serve ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "serve":
        _serve(args[1:])
    parsed = _parser().parse_args(args)
    try:
        return int(parsed.run(parsed))
    except (CliError, ExprError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except Unavailable as exc:
        return _fail(f"cannot reach a gradserve server at {parsed.server}: {_first_line(exc)}")
    except GradserveError as exc:
        return _fail(_first_line(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except Exception as exc:  # never a traceback
        return _fail(f"unexpected {type(exc).__name__}: {_first_line(exc)}")


def _serve(args: list[str]) -> NoReturn:
    # The client never imports the server package: run it as its own program.
    os.execv(sys.executable, [sys.executable, "-m", "gradserve", "serve", *args])


def _fail(message: str, status: int = EXIT_ERROR) -> int:
    print(f"gradserve: error: {message}", file=sys.stderr)
    return status


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------
# Arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradserve",
        description="Values, gradients and Jacobians of math expressions, computed by a "
        "gradserve server.",
        epilog='Example: gradserve grad "ln(sin(x**3)**2)" --at x=0.7',
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the server (python -m gradserve serve --help)")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        default=os.environ.get("GRADSERVE_TARGET") or DEFAULT_TARGET,
        metavar="HOST:PORT",
        help="the server (default: $GRADSERVE_TARGET, else %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="print JSON")
    common.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="per call (default: 30)"
    )
    common.add_argument(
        "--token",
        default=os.environ.get("GRADSERVE_TOKEN"),
        help="a bearer token (default: $GRADSERVE_TOKEN)",
    )

    expression = argparse.ArgumentParser(add_help=False, parents=[common])
    expression.add_argument(
        "expr",
        metavar="EXPR",
        help="e.g. 'ln(sin(x**3)**2)' or '[ln(x**2), sin(3*x)]' (a vector function)",
    )
    expression.add_argument(
        "--at",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind a variable to a number or a list, e.g. x=0.7 or y=[1,2] (repeatable)",
    )

    cmd = commands.add_parser("eval", parents=[expression], help="the value of EXPR")
    cmd.set_defaults(run=_eval)
    for name, run, what in (
        ("grad", _grad, "the gradient of a scalar EXPR"),
        ("jacobian", _jacobian, "the Jacobian of EXPR"),
    ):
        cmd = commands.add_parser(name, parents=[expression], help=what)
        cmd.add_argument(
            "--wrt",
            action="append",
            metavar="NAME",
            help="differentiate with respect to NAME (repeatable; default: every variable)",
        )
        cmd.set_defaults(run=run)
        if name == "jacobian":
            cmd.add_argument("--mode", choices=("auto", "forward", "reverse"), default="auto")
    commands.add_parser("ops", parents=[common], help="list the operators").set_defaults(run=_ops)
    commands.add_parser("health", parents=[common], help="check the server").set_defaults(
        run=_health
    )
    return parser


def _bindings(at: list[str]) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for item in at:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise CliError(f"--at {item!r}: expected NAME=VALUE, e.g. x=0.7 or y=[1,2]")
        try:
            values[name] = parse_value(text)
        except ExprError as exc:
            raise CliError(f"--at {name}: {exc}") from None
    return values


def _build(args: argparse.Namespace) -> tuple[Any, str, list[str], dict[str, np.ndarray]]:
    values = _bindings(args.at)
    graph, used = parse_expression(args.expr, values)
    feeds = {n: values[n] for n in used}
    return graph, graph.output_names[0], used, feeds


def _wrt(args: argparse.Namespace, used: list[str]) -> list[str]:
    if not args.wrt:
        if not used:
            raise CliError("EXPR has no variables to differentiate with respect to")
        return used
    for name in args.wrt:
        if name not in used:
            raise CliError(f"--wrt {name}: not a variable of EXPR (variables: {', '.join(used)})")
    return list(dict.fromkeys(args.wrt))


def _client(args: argparse.Namespace) -> Client:
    return Client(args.server, timeout=args.timeout, token=args.token, retries=1)


# ----------------------------------------------------------------------------------------------
# Commands


def _eval(args: argparse.Namespace) -> int:
    graph, out, _, feeds = _build(args)
    with _client(args) as client:
        value = client.evaluate(graph, feeds)[out]
    if args.json:
        _print_json({"value": value})
    else:
        print(_fmt(value))
    return 0


def _grad(args: argparse.Namespace) -> int:
    graph, out, used, feeds = _build(args)
    shape = graph.outputs[out].shape
    if shape:
        raise CliError(
            f"grad needs a scalar EXPR, but this one has shape {tuple(shape)}: use "
            "`gradserve jacobian` for the derivative of each element, or grad of sum(...)"
        )
    wrt = _wrt(args, used)
    with _client(args) as client:
        value = client.evaluate(graph, feeds)[out]
        grads = client.grad(graph, feeds, of=out, wrt=wrt)
    if args.json:
        _print_json({"value": value, "grad": grads})
    else:
        print(f"value: {_fmt(value)}")
        for name, g in grads.items():
            print(f"grad {name}: {_fmt(g, indent=len(name) + 7)}")
    return 0


def _jacobian(args: argparse.Namespace) -> int:
    graph, out, used, feeds = _build(args)
    wrt = _wrt(args, used)
    with _client(args) as client:
        value = client.evaluate(graph, feeds)[out]
        jac = client.jacobian(graph, feeds, of=[out], wrt=wrt, mode=args.mode)[out]
    if args.json:
        _print_json({"value": value, "jacobian": jac})
    else:
        print(f"value: {_fmt(value)}")
        for name, j in jac.items():
            shape = "(" + ", ".join(str(d) for d in j.shape) + ("," if j.ndim == 1 else "") + ")"
            print(f"jacobian d/d{name}, shape {shape}:")
            print(_fmt(j, indent=0) if j.ndim else f"{_fmt(j)}")
    return 0


def _ops(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ops = client.operators()
    if args.json:
        _print_json(
            [
                {
                    "name": op.name,
                    "arity": op.arity,
                    "differentiable": op.differentiable,
                    "attrs": [
                        {"name": a.name, "kind": a.kind, "required": a.required}
                        | ({"default": a.default} if a.default else {})
                        for a in op.attrs
                    ],
                    "doc": op.doc,
                }
                for op in ops
            ]
        )
        return 0
    width = max((len(op.name) for op in ops), default=4)
    for op in ops:
        arity = "n" if op.arity < 0 else str(op.arity)
        attrs = ", ".join(a.name for a in op.attrs)
        flag = " " if op.differentiable else "*"
        line = f"{op.name:<{width}}  {arity}{flag} {op.doc}"
        print(line + (f"  [{attrs}]" if attrs else ""))
    print("(* = no gradient; n = any number of operands)")
    return 0


def _health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.health()
    if args.json:
        _print_json({"status": status, "server": args.server})
    else:
        print(f"{args.server}: {status}")
    return 0 if status == "SERVING" else EXIT_ERROR


# ----------------------------------------------------------------------------------------------
# Output


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(_jsonable(value)))


def _fmt(value: Any, indent: int = 0) -> str:
    array = np.asarray(value)
    if array.ndim == 0:
        return repr(array.item())
    text = np.array2string(array, separator=", ", max_line_width=100, precision=10)
    return text.replace("\n", "\n" + " " * indent)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
