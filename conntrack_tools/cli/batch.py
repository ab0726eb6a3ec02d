"""-R / --load-file: a file of conntrack command lines (ct_parse_file() of conntrack 1.4.7)."""

from __future__ import annotations

import os

from . import options as O
from .errors import PARAMETER_PROBLEM, CliError
from .labelmap import fgets_chunks
from .parse import BatchState, _parse
from .request import Request

_MAX_ARGC = 255


def tokenize_line(line: bytes) -> list[bytes]:
    """add_param_to_argv(): blanks split, "..." quote (\\ escapes inside), 1023-byte params."""
    args: list[bytes] = []
    param = bytearray()
    quote_open = escaped = False

    def add_param(byte: int) -> None:
        param.append(byte)
        if len(param) >= 1024:
            raise CliError("Parameter too long!")

    def add_argv() -> None:
        if len(args) + 2 >= _MAX_ARGC:  # argv[0] (the program name) is already stored
            raise CliError("too many arguments")
        args.append(bytes(param))
        param.clear()

    for byte in line:
        if quote_open:
            if escaped:
                add_param(byte)
                escaped = False
                continue
            if byte == 0x5C:  # backslash
                escaped = True
                continue
            if byte != 0x22:
                add_param(byte)
                continue
            quote_open = False  # closing quote ends the parameter, even an empty one
        elif byte == 0x22:
            quote_open = True
            continue
        if byte in (0x20, 0x09, 0x0A):
            if not param:
                continue
        elif byte != 0x22:
            add_param(byte)
            continue
        add_argv()
    if param:
        add_argv()
    return args


def _batch_lines(data: bytes):
    """ct_parse_file()'s reading: fgets(10240) chunks, leading blanks skipped, '\n'/'#' lines
    ignored. Yields the raw line so tokenizing errors surface in file order."""
    for chunk in fgets_chunks(data, 10240):
        text = chunk.split(b"\0", 1)[0].lstrip(b" \t")
        if text[:1] in (b"\n", b"#"):
            continue
        yield text


def split_batch_lines(data: bytes) -> list[list[str]]:
    """The argv (without argv[0]) of each command line of a -R file, tokenized like C."""
    return [[os.fsdecode(tok) for tok in tokenize_line(text)] for text in _batch_lines(data)]


def parse_batch_requests(data: bytes | str, *, prog: str = "conntrack",
                         labelmap_path: str | None = None) -> list[Request]:
    """Parse every line first (any error aborts), then refuse non -I/-A/-U/-D/-F commands.

    Like C: warnings of all lines are printed before anything runs (so print every request's
    `warnings` before executing the first), the -o bits accumulate over the whole file and apply
    to every line, and `exec_checks()` is left to the executor, per line, right before it runs it.
    An error carries the warnings of the lines parsed before it in its prelude.
    """
    if isinstance(data, str):
        data = os.fsencode(data)
    state = BatchState()
    reqs: list[Request] = []
    printed: list[str] = []
    for text in _batch_lines(data):
        try:
            args = [os.fsdecode(tok) for tok in tokenize_line(text)]
            req = _parse(args, prog, state, labelmap_path)
        except CliError as err:
            err.prelude = tuple(printed) + err.prelude
            raise
        printed += req.warnings
        reqs.append(req)
    for req in reqs:
        if req.cmd_index not in O.BATCH_ALLOWED:
            text = O.BATCH_UNSUPPORTED_TEXT.get(req.cmd_index, "unknown")
            raise CliError(f"Cannot use command `{text}' with --load-file", PARAMETER_PROBLEM, tuple(printed))
    names = frozenset(name for bit, name in O.OUTPUT_FLAG_NAMES.items() if state.output_mask & bit)
    for req in reqs:
        req.output_mask = state.output_mask
        req.output = names
    return reqs


def parse_batch_file(data: bytes | str, *, prog: str = "conntrack",
                     labelmap_path: str | None = None) -> list[list[str]]:
    """The argv (without argv[0]) of each command line of a -R file, after all of C's checks."""
    if isinstance(data, str):
        data = os.fsencode(data)
    parse_batch_requests(data, prog=prog, labelmap_path=labelmap_path)
    return split_batch_lines(data)


def load_batch(path: str, *, prog: str = "conntrack", labelmap_path: str | None = None) -> list[Request]:
    """`conntrack -R PATH` up to execution: open ('-' = stdin), read, parse, check."""
    if path == "-":
        path = "/dev/stdin"
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        raise CliError(f"Failed to open file {path} for reading") from None
    return parse_batch_requests(data, prog=prog, labelmap_path=labelmap_path)
