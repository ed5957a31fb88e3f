"""The `control` console script: the full Typer app, except for two hot paths.

`control queue rpc` is started by every ansible call and every ssh connection;
it skips loading the rest of the command line (see `control.rpc.main`). `control
--version` is read on every host by every provisioning run (the worker role checks the
installed version): it prints the package's version without loading the CLI.
"""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:
        from control import __version__  # noqa: PLC0415

        print(__version__)
        return
    if argv[:2] == ["queue", "rpc"] and "--help" not in argv:
        from control.rpc import main as rpc_main  # noqa: PLC0415  the point is to load less

        sys.exit(rpc_main(argv[2:]))
    from control.cli import main as cli_main  # noqa: PLC0415

    cli_main()
