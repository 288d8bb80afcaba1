"""``python -m gradserve serve [flags]``: run the server (``gradserve serve`` execs this)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "serve":
        print("usage: python -m gradserve serve [flags]  (see: serve --help)", file=sys.stderr)
        return 2
    from gradserve import logfmt
    from gradserve.config import load_settings
    from gradserve.process import tune_malloc
    from gradserve.workers import prepare_environment, serve_workers

    settings = load_settings(argv[1:], prog="gradserve serve")
    logfmt.configure(settings.log_level)
    tune_malloc()  # before any thread starts; the workers inherit it
    if settings.workers > 1:
        prepare_environment(settings)  # before anything imports prometheus_client
        return serve_workers(settings)
    from gradserve.server import serve

    return serve(settings)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        from gradserve.process import restart_with_huge_pages

        restart_with_huge_pages()  # before anything starts: glibc reads it as a process starts
    sys.exit(main())
