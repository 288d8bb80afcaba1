"""The ``gradserve`` command: values and derivatives of math expressions from a terminal.

    gradserve eval "sin(x)**2" --at x=0.7
    gradserve grad "ln(sin(x**3)**2)" --at x=0.7
    gradserve jacobian "[ln(x**2), sin(3*x)]" --at x=0.7 --json
    gradserve jacobian "x**2" --at "x=[1,2,3]" --sparse
    gradserve hessian "sum(x**2 * y)" --at "x=[1,2]" --at y=3
    gradserve explain "sin(x) * x" --wrt x
    gradserve ops | gradserve health | gradserve serve --port 50051
    gradserve train --graph model.gsg --data data.npz --params init.npz --loss loss \
        --optimizer sgd --lr 0.1 --batch-size 64 --epochs 5 --out trained.npz --plot loss.png

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

from ._channel import DEFAULT_TARGET
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
        ("hessian", _hessian, "the Hessian of a scalar EXPR"),
        ("explain", _explain, "print the derivative program of EXPR"),
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
            cmd.add_argument(
                "--sparse", action="store_true", help="detect the sparsity; print the non-zeros"
            )
        if name == "explain":
            cmd.add_argument("--kind", choices=("vjp", "jvp", "hvp"), default="vjp")
    _train_parser(commands, common)
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


def _build(
    args: argparse.Namespace, unbound: float | None = None
) -> tuple[Any, str, list[str], dict[str, np.ndarray]]:
    """(graph, its output, the variables EXPR uses, their values). With ``unbound``, each
    ``--wrt`` name without an ``--at`` value is a scalar of that value."""
    values = _bindings(args.at)
    if unbound is not None:
        for name in args.wrt or ():
            values.setdefault(name, np.asarray(unbound))
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
    hint = "use `gradserve jacobian` for the derivative of each element, or grad of sum(...)"
    _scalar(graph, out, "grad", hint)
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
        jacobians = client.jacobian(
            graph, feeds, of=[out], wrt=wrt, mode=args.mode, sparse=args.sparse
        )
    jac = jacobians[out]
    if args.json:
        blocks = {n: _coo(j) for n, j in jac.items()} if args.sparse else jac
        _print_json({"value": value, "jacobian": blocks})
    else:
        print(f"value: {_fmt(value)}")
        for name, j in jac.items():
            print(f"jacobian d/d{name}, shape {_shape(j.shape)}" + _nonzeros(j, args.sparse))
    return 0


def _hessian(args: argparse.Namespace) -> int:
    graph, out, used, feeds = _build(args)
    _scalar(graph, out, "hessian", "take sum(...) of it")
    wrt = _wrt(args, used)
    with _client(args) as client:
        value = client.evaluate(graph, feeds)[out]
        hess = client.hessian(graph, feeds, of=out, wrt=wrt)
    if args.json:
        _print_json({"value": value, "hessian": hess})
    else:
        print(f"value: {_fmt(value)}")
        for a, row in hess.items():
            for b, block in row.items():
                print(f"hessian d2/d{a}d{b}, shape {_shape(block.shape)}:")
                print(_fmt(block))
    return 0


def _explain(args: argparse.Namespace) -> int:
    graph, out, used, _ = _build(args, unbound=0.0)
    if args.kind == "hvp":
        _scalar(graph, out, "explain --kind hvp", "take sum(...) of it")
    wrt = _wrt(args, used)
    with _client(args) as client:
        program = client.derivative_program(graph, of=out, wrt=wrt, kind=args.kind)
    if args.json:
        _print_json({"kind": args.kind, "program": str(program)})
    else:
        print(program)
    return 0


def _scalar(graph: Any, out: str, command: str, hint: str) -> None:
    shape = graph.outputs[out].shape
    if shape:
        raise CliError(
            f"{command} needs a scalar EXPR, but this one has shape {tuple(shape)}: {hint}"
        )


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _nonzeros(jac: Any, sparse: bool) -> str:
    """The rest of a Jacobian's heading and its values: all of them, or each stored entry."""
    if not sparse:
        return ":\n" + _fmt(jac)
    coo = jac.tocoo()
    lines = [f", {coo.nnz} stored entries:"]
    width = len(str(max(coo.shape, default=0)))
    for i, j, v in zip(coo.row, coo.col, coo.data, strict=True):
        lines.append(f"  ({i:>{width}}, {j:>{width}})  {_fmt(v)}")
    return "\n".join(lines)


def _coo(jac: Any) -> dict[str, Any]:
    """A sparse Jacobian as JSON: its shape and its stored entries (row, column, value)."""
    coo = jac.tocoo()
    return {"shape": list(coo.shape), "rows": coo.row, "cols": coo.col, "values": coo.data}


def _ops(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ops = client.operators()
    if args.json:
        _print_json(
            [
                {
                    "name": op.name,
                    "arity": op.arity,
                    "min_arity": op.min_arity,
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
        if 0 <= op.min_arity < op.arity:
            arity = f"{op.min_arity}-{arity}"
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


def _train_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    cmd = commands.add_parser(
        "train",
        parents=[common],
        help="train a saved graph's parameters on npz data",
        description="Train the parameters of a graph saved with Graph.save on the arrays of an"
        " npz file, with a progress bar; writes the final parameters as npz.",
    )
    cmd.add_argument("--graph", required=True, metavar="MODEL.gsg", help="a Graph.save file")
    cmd.add_argument("--data", required=True, metavar="DATA.npz", help="the data, by input name")
    cmd.add_argument(
        "--params", required=True, metavar="INIT.npz", help="initial parameters, by input name"
    )
    cmd.add_argument("--loss", default=None, help="the scalar output (default: the only one)")
    cmd.add_argument("--out", required=True, metavar="TRAINED.npz", help="final parameters")
    cmd.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    cmd.add_argument("--lr", type=float, default=None, help="learning rate (adam: 1e-3)")
    cmd.add_argument("--momentum", type=float, default=0.0, help="sgd momentum")
    cmd.add_argument("--nesterov", action="store_true", help="sgd: Nesterov momentum")
    cmd.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty")
    cmd.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.999), help="adam betas")
    cmd.add_argument("--eps", type=float, default=1e-8, help="adam eps")
    cmd.add_argument("--batch-size", type=int, default=128)
    cmd.add_argument("--epochs", type=int, default=None, help="passes over the data (default 1)")
    cmd.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    cmd.add_argument("--seed", type=int, default=0, help="shuffle seed")
    cmd.add_argument("--no-shuffle", action="store_true", help="take batches in order")
    cmd.add_argument("--plot", metavar="LOSS.png", help="write a loss curve (needs matplotlib)")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    cmd.set_defaults(run=_train)


def _load_npz(path: str, flag: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise CliError(f"{flag} {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise CliError(f"{flag} {path}: not a readable npz file ({_first_line(exc)})") from None


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CliError(
            "--plot needs matplotlib: pip install 'gradserve[plot]' (or matplotlib)"
        ) from None
    return plt


def _train(args: argparse.Namespace) -> int:
    from .graph import Graph
    from .training import SGD, Adam

    plt = _pyplot() if args.plot else None
    try:
        graph = Graph.load(args.graph)
    except FileNotFoundError:
        raise CliError(f"--graph {args.graph}: no such file") from None
    except Exception as exc:
        raise CliError(f"--graph {args.graph}: not a saved graph ({_first_line(exc)})") from None
    data = _load_npz(args.data, "--data")
    params = _load_npz(args.params, "--params")
    if args.optimizer == "sgd":
        if args.lr is None:
            raise CliError("--optimizer sgd needs --lr, e.g. --lr 0.1")
        optimizer: Any = SGD(
            lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
            weight_decay=args.weight_decay,
        )  # fmt: skip
    else:
        optimizer = Adam(
            lr=1e-3 if args.lr is None else args.lr, betas=tuple(args.betas), eps=args.eps,
            weight_decay=args.weight_decay,
        )  # fmt: skip
    with _client(args) as client:
        run = client.train(
            graph, loss=args.loss, params=params, data=data, optimizer=optimizer,
            batch_size=args.batch_size, epochs=args.epochs, max_steps=args.max_steps,
            seed=args.seed, shuffle=not args.no_shuffle, checkpoint_every=None,
            progress=not (args.quiet or args.json),
        )  # fmt: skip
        final = run.params  # runs it to the end
    np.savez(args.out, **final)
    if plt is not None:
        steps = [s.step for s in run.history]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, [s.loss for s in run.history])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training loss")
        fig.tight_layout()
        fig.savefig(args.plot)
        plt.close(fig)
    result = run.result
    summary = {
        "steps": result.steps if result else 0,
        "final_loss": result.final_loss if result else None,
        "seconds": result.elapsed if result else None,
        "out": args.out,
    }
    if args.plot:
        summary["plot"] = args.plot
    if args.json:
        _print_json(summary)
    else:
        line = f"trained {summary['steps']} steps, final loss {summary['final_loss']:.6g};"
        line += f" parameters written to {args.out}"
        print(line + (f", loss curve to {args.plot}" if args.plot else ""))
    return 0


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
