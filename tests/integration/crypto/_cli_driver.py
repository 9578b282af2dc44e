"""Run several ``bastion`` commands in ONE process (each fresh CLI start costs seconds here).

Reads a JSON list of argv lists (or ["py", CODE]) on stdin; prints a JSON list of
{"code", "out", "err"}. Errors are handled exactly as ``bastion.cli.main.main`` does.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import click

from bastion.cli.main import _load_commands, app
from bastion.errors import BastionError


def run(argv: list[str]) -> dict[str, object]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if argv[0] == "py":
                exec(argv[1], {})  # a step that is not a command (writing audit records)
            else:
                result = app(args=argv, standalone_mode=False)
                code = result if isinstance(result, int) else 0
        except BastionError as exc:
            print(f"error: {exc.user_text()}", file=sys.stderr)
            code = 1
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def main() -> None:
    _load_commands()
    steps = json.loads(sys.stdin.read())
    print(json.dumps([run(s) for s in steps]))


if __name__ == "__main__":
    main()
