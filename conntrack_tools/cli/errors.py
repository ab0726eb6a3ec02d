"""CliError: a C-identical conntrack failure (stderr text + exit status).

Why a single class: the executor only has to `sys.stderr.write(str(err)); sys.exit(err.exit_code)`
to be byte-identical with conntrack 1.4.7's `exit_error()`.
"""

from __future__ import annotations

PROGNAME = "conntrack"
VERSION = "1.4.7"

OTHER_PROBLEM = 1
PARAMETER_PROBLEM = 2

PREFIX = f"{PROGNAME} v{VERSION} (conntrack-tools): "
TRY_HELP = f"Try `{PROGNAME} -h' or '{PROGNAME} --help' for more information.\n"


class CliError(Exception):
    """`exit_error(status, msg)`.

    `message` is the bare text after the "conntrack v1.4.7 (conntrack-tools): " prefix.
    `prelude` holds stderr lines C already printed before failing (WARNING lines,
    `nfct_labelmap_new: ...`), without newlines. `str(err)` is the complete stderr output,
    newline-terminated; exit status 2 (PARAMETER_PROBLEM) adds the "Try ..." line.
    """

    def __init__(self, message: str, exit_code: int = PARAMETER_PROBLEM, prelude: tuple[str, ...] = ()):
        super().__init__(message, exit_code)
        self.message = message
        self.exit_code = exit_code
        self.prelude = tuple(prelude)

    def __str__(self) -> str:
        out = "".join(line + "\n" for line in self.prelude) + PREFIX + self.message + "\n"
        if self.exit_code == PARAMETER_PROBLEM:
            out += TRY_HELP
        return out

    def __repr__(self) -> str:
        return f"CliError({self.message!r}, {self.exit_code})"
