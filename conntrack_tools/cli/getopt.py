"""GNU getopt_long (glibc posix/getopt.c) with opterr = 0, as conntrack 1.4.7 calls it.

Permutation, ``-Lexpect``, unambiguous long-option prefixes and the argv[optind-1] quirk in
error messages: argparse reproduces none of them.
"""

from __future__ import annotations

import os

from . import options as O


def _parse_optstring(spec: str) -> tuple[bool, dict[str, int]]:
    colon = spec.startswith(":")
    table: dict[str, int] = {}
    i = 1 if colon else 0
    while i < len(spec):
        ch = spec[i]
        kind = O.NO_ARG
        if spec[i + 1 : i + 3] == "::":
            kind = O.OPTIONAL_ARG
            i += 2
        elif spec[i + 1 : i + 2] == ":":
            kind = O.REQUIRED_ARG
            i += 1
        table[ch] = kind
        i += 1
    return colon, table


_COLON_MODE, _SHORTOPTS = _parse_optstring(O.GETOPT_STR)
QUESTION, COLON = ord("?"), ord(":")


class Getopt:
    """Re-entrant getopt_long with PERMUTE ordering; mutates `argv` like glibc does."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.optind = 1
        self.first_nonopt = self.last_nonopt = 1
        self.nextchar: str | None = None
        self.optarg: str | None = None
        self.permute = "POSIXLY_CORRECT" not in os.environ

    def _nonoption(self, i: int) -> bool:
        a = self.argv[i]
        return a[:1] != "-" or len(a) == 1

    def _exchange(self) -> None:
        b, m, t = self.first_nonopt, self.last_nonopt, self.optind
        self.argv[b:t] = self.argv[m:t] + self.argv[b:m]
        self.first_nonopt += t - m
        self.last_nonopt = t

    def next(self, longopts: list[O.LongOpt]) -> int:
        argv = self.argv
        argc = len(argv)
        self.optarg = None
        if not self.nextchar:
            if self.last_nonopt > self.optind:
                self.last_nonopt = self.optind
            if self.first_nonopt > self.optind:
                self.first_nonopt = self.optind
            if self.permute:
                if self.first_nonopt != self.last_nonopt and self.last_nonopt != self.optind:
                    self._exchange()
                elif self.last_nonopt != self.optind:
                    self.first_nonopt = self.optind
                while self.optind < argc and self._nonoption(self.optind):
                    self.optind += 1
                self.last_nonopt = self.optind
            if self.optind != argc and argv[self.optind] == "--":
                self.optind += 1
                if self.first_nonopt != self.last_nonopt and self.last_nonopt != self.optind:
                    self._exchange()
                elif self.first_nonopt == self.last_nonopt:
                    self.first_nonopt = self.optind
                self.last_nonopt = argc
                self.optind = argc
            if self.optind == argc:
                if self.first_nonopt != self.last_nonopt:
                    self.optind = self.first_nonopt
                return -1
            if self._nonoption(self.optind):
                return -1  # REQUIRE_ORDER (POSIXLY_CORRECT); PERMUTE never gets here
            if argv[self.optind][1] == "-":
                self.nextchar = argv[self.optind][2:]
                return self._long(longopts)
            self.nextchar = argv[self.optind][1:]

        c = self.nextchar[0]
        self.nextchar = self.nextchar[1:]
        kind = _SHORTOPTS.get(c)
        if not self.nextchar:
            self.optind += 1
        if kind is None:
            return QUESTION
        if kind == O.OPTIONAL_ARG:
            if self.nextchar:
                self.optarg = self.nextchar
                self.optind += 1
            self.nextchar = None
        elif kind == O.REQUIRED_ARG:
            if self.nextchar:
                self.optarg = self.nextchar
                self.optind += 1
            elif self.optind == argc:
                self.nextchar = None
                return COLON if _COLON_MODE else QUESTION
            else:
                self.optarg = argv[self.optind]
                self.optind += 1
            self.nextchar = None
        return ord(c)

    def _long(self, longopts: list[O.LongOpt]) -> int:
        text = self.nextchar or ""
        eq = text.find("=")
        name = text if eq < 0 else text[:eq]
        found: O.LongOpt | None = None
        for opt in longopts:
            if opt.name == name:
                found = opt
                break
        if found is None:
            ambiguous = False
            for opt in longopts:
                if opt.name.startswith(name):
                    if found is None:
                        found = opt
                    elif found.has_arg != opt.has_arg or found.val != opt.val:
                        ambiguous = True
            if ambiguous:
                found = None
        self.nextchar = None
        self.optind += 1
        if found is None:
            return QUESTION
        if eq >= 0:
            if not found.has_arg:
                return QUESTION
            self.optarg = text[eq + 1 :]
        elif found.has_arg == O.REQUIRED_ARG:
            if self.optind < len(self.argv):
                self.optarg = self.argv[self.optind]
                self.optind += 1
            else:
                return COLON if _COLON_MODE else QUESTION
        return found.val
