"""argv -> Request, reproducing conntrack 1.4.7's `do_parse()` bit for bit.

Why hand-rolled: argparse cannot mimic GNU getopt_long (permutation, `-Lexpect`, unambiguous
prefixes, the argv[optind-1] quirk in error messages) nor C's lenient number parsing
(atoi/strtoul wrap-around), and scripts depend on both. Helpers below re-implement the few
libc routines involved (strtol/strtoul, inet_aton, getopt_long) with glibc semantics.
"""

from __future__ import annotations

import os

from . import options as O
from .errors import OTHER_PROBLEM, PARAMETER_PROBLEM, CliError
from .request import AF_INET, AF_INET6, AF_UNSPEC, Command, Nat, Request, Table, Tuple

CONNLABEL_CONF = "/etc/xtables/connlabel.conf"

_CMD_ENUM: dict[int, tuple[Command, Table]] = {
    O.CT_LIST: (Command.LIST, Table.CONNTRACK),
    O.CT_CREATE: (Command.CREATE, Table.CONNTRACK),
    O.CT_UPDATE: (Command.UPDATE, Table.CONNTRACK),
    O.CT_DELETE: (Command.DELETE, Table.CONNTRACK),
    O.CT_GET: (Command.GET, Table.CONNTRACK),
    O.CT_FLUSH: (Command.FLUSH, Table.CONNTRACK),
    O.CT_EVENT: (Command.EVENT, Table.CONNTRACK),
    O.CT_VERSION: (Command.VERSION, Table.CONNTRACK),
    O.CT_HELP: (Command.HELP, Table.CONNTRACK),
    O.EXP_LIST: (Command.LIST, Table.EXPECT),
    O.EXP_CREATE: (Command.CREATE, Table.EXPECT),
    O.EXP_DELETE: (Command.DELETE, Table.EXPECT),
    O.EXP_GET: (Command.GET, Table.EXPECT),
    O.EXP_FLUSH: (Command.FLUSH, Table.EXPECT),
    O.EXP_EVENT: (Command.EVENT, Table.EXPECT),
    O.CT_COUNT: (Command.COUNT, Table.CONNTRACK),
    O.EXP_COUNT: (Command.COUNT, Table.EXPECT),
    O.CT_STATS: (Command.STATS, Table.CONNTRACK),
    O.EXP_STATS: (Command.STATS, Table.EXPECT),
    O.CT_ADD: (Command.ADD, Table.CONNTRACK),
    O.NO_COMMAND: (Command.NONE, Table.CONNTRACK),
}
# Commands that keep AF_UNSPEC when no address/-f was given; all others default to AF_INET.
_UNSPEC_OK = frozenset({O.CT_LIST, O.CT_UPDATE, O.CT_DELETE, O.CT_GET, O.CT_FLUSH, O.CT_EVENT})

# ---------------------------------------------------------------------------------------------
# libc look-alikes (glibc 2.36, C locale, LP64)
# ---------------------------------------------------------------------------------------------

_SPACE = " \t\n\v\f\r"
_ULONG_MAX = (1 << 64) - 1
_LONG_MAX = (1 << 63) - 1
_LONG_MIN = -(1 << 63)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _digit(ch: str) -> int:
    o = ord(ch)
    if 48 <= o <= 57:
        return o - 48
    if 97 <= o <= 122:
        return o - 87
    if 65 <= o <= 90:
        return o - 55
    return 99


def c_strtox(s: str, base: int, signed: bool) -> tuple[int, int]:
    """strtol/strtoul: (value, index of first unparsed char); clamps like glibc on overflow."""
    n = len(s)
    i = 0
    while i < n and s[i] in _SPACE:
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    hex_prefix = False
    if (base in (0, 16)) and s[i : i + 1] == "0" and s[i + 1 : i + 2] in ("x", "X"):
        base = 16
        i += 2
        hex_prefix = True
    elif base == 0:
        base = 8 if s[i : i + 1] == "0" else 10
    start = i
    val = 0
    while i < n:
        d = _digit(s[i])
        if d >= base:
            break
        val = val * base + d
        i += 1
    if i == start:
        return 0, (start - 1 if hex_prefix else 0)
    if signed:
        val = -val if neg else val
        val = max(_LONG_MIN, min(_LONG_MAX, val))
    elif val > _ULONG_MAX:
        val = _ULONG_MAX
    elif neg:
        val = (-val) & _ULONG_MAX
    return val, i


def c_strtoul(s: str, base: int = 0) -> int:
    return c_strtox(s, base, False)[0]


def c_atol(s: str) -> int:
    return c_strtox(s, 10, True)[0]


def c_atoi(s: str) -> int:
    """glibc atoi == (int)strtol(s, NULL, 10): the long is truncated to 32 bits."""
    v = c_atol(s) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def inet_aton(cp: str) -> bytes | None:
    """glibc inet_aton: a, a.b, a.b.c, a.b.c.d in C number bases; trailing whitespace+junk ok."""
    parts: list[int] = []
    i = 0
    n = len(cp)
    while True:
        if i >= n or not ("0" <= cp[i] <= "9"):
            return None
        val, end = c_strtox(cp[i:], 0, False)
        if val > 0xFFFFFFFF:
            return None
        i += end
        c = cp[i] if i < n else ""
        if c == ".":
            if len(parts) > 2 or val > 0xFF:
                return None
            parts.append(val)
            i += 1
        else:
            break
    if c and c not in _SPACE:
        return None
    if val > (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)[len(parts)]:
        return None
    word = val
    for k, p in enumerate(parts):
        word |= p << (24 - 8 * k)
    return word.to_bytes(4, "big")


def inet_pton6(s: str) -> bytes | None:
    if not s.isascii():
        return None
    import _socket

    try:
        return _socket.inet_pton(_socket.AF_INET6, s)
    except (OSError, ValueError):
        return None


def parse_addr(cp: str, want_mask: bool = True) -> tuple[int, bytes | None, int]:
    """C `parse_addr`: (family, packed, mask) with mask -1 = none, -2 = invalid."""
    buf = cp[:45]  # strncpy into char[INET6_ADDRSTRLEN]
    mask = -1
    if want_mask:
        slash = buf.find("/")
        if slash >= 0:
            tail = buf[slash + 1 :]
            val, end = c_strtox(tail, 10, True)
            val &= 0xFFFFFFFF  # long -> int
            mask = val - (1 << 32) if val & 0x80000000 else val
            if mask < 0 or end != len(tail):
                mask = -2
            buf = buf[:slash]
    packed = inet_aton(buf)
    if packed is not None:
        if mask > 32:
            mask = -2
        return AF_INET, packed, mask
    packed = inet_pton6(buf)
    if packed is not None:
        if mask > 128:
            mask = -2
        return AF_INET6, packed, mask
    return AF_UNSPEC, None, mask


def build_netmask(bits: int, nbytes: int) -> bytes:
    total = nbytes * 8
    bits = min(bits, total)
    return (((1 << bits) - 1) << (total - bits)).to_bytes(nbytes, "big")


def _ascii_lower(s: str) -> str:
    return s.translate(_ASCII_LOWER)


# ---------------------------------------------------------------------------------------------
# GNU getopt_long (glibc posix/getopt.c), opterr = 0
# ---------------------------------------------------------------------------------------------


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
_QUESTION, _COLON = ord("?"), ord(":")


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
            return _QUESTION
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
                return _COLON if _COLON_MODE else _QUESTION
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
            return _QUESTION
        if eq >= 0:
            if not found.has_arg:
                return _QUESTION
            self.optarg = text[eq + 1 :]
        elif found.has_arg == O.REQUIRED_ARG:
            if self.optind < len(self.argv):
                self.optarg = self.argv[self.optind]
                self.optind += 1
            else:
                return _COLON if _COLON_MODE else _QUESTION
        return found.val


# ---------------------------------------------------------------------------------------------
# connlabel.conf (libnetfilter_conntrack src/conntrack/labels.c)
# ---------------------------------------------------------------------------------------------

_POSIX_SPACE = " \f\r\t\v"


def _fgets_chunks(data: bytes, size: int) -> list[bytes]:
    """Split like repeated fgets(buf, size): at most size-1 bytes, up to and including '\\n'."""
    out = []
    pos = 0
    n = len(data)
    while pos < n:
        nl = data.find(b"\n", pos, pos + size - 1)
        end = nl + 1 if nl >= 0 else min(n, pos + size - 1)
        out.append(data[pos:end])
        pos = end
    return out


def read_labelmap(path: str = CONNLABEL_CONF) -> tuple[dict[str, int] | None, str]:
    """Load a connlabel.conf: ({name: bit}, "") or (None, perror text) like nfct_labelmap_new."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return None, os.strerror(exc.errno or 0)
    names: dict[str, int] = {}
    seen: set[int] = set()
    for raw in _fgets_chunks(data, 1024):
        line = raw.split(b"\0", 1)[0].decode("latin-1")
        if line[:1] == "#":
            continue
        bit, end = c_strtox(line, 0, False)
        if (bit == 0 and end == 0) or bit >= 1024 or bit in seen:
            continue
        label = line[end:].lstrip(_POSIX_SPACE).split("\n", 1)[0]
        label = label[:1] + label[1:].rstrip(_POSIX_SPACE)
        if not label:
            continue
        sane = all(ch.isascii() and (ch.isalnum() or ch in " -") for ch in label)
        if sane and label not in names:
            names[label] = bit
            seen.add(bit)
    if not names:
        return None, "Success"
    return names, ""


# ---------------------------------------------------------------------------------------------
# do_parse
# ---------------------------------------------------------------------------------------------

# opt char -> (tuple attribute of the Request, field) for address options
_ADDR_TARGET = {"s": ("orig", "src"), "d": ("orig", "dst"), "r": ("reply", "src"), "q": ("reply", "dst"),
                "{": ("mask", "src"), "}": ("mask", "dst"), "[": ("exp", "src"), "]": ("exp", "dst")}
_OPT2MASKOPT = {"s": "{", "d": "}", "[": "{", "]": "}"}
_OPT2NAME = dict(O.OPTIONS)


class BatchState:
    """What C keeps in globals across the lines of one -R file: the -o bits (`output_mask`),
    the last protocol handler (`h`) and the loaded label map."""

    def __init__(self) -> None:
        self.output_mask = 0
        self.handler: O.ProtoExt | None = None
        self.labelmap: dict[str, int] | None = None


class _Parser:
    def __init__(self, argv: list[str], prog: str, state: BatchState, labelmap_path: str):
        self.argv = [prog] + [a.split("\0", 1)[0] for a in argv]
        self.state = state
        self.labelmap_path = labelmap_path
        self.req = Request(command=Command.NONE, prog=prog)
        self.warnings = self.req.warnings
        self.options = 0
        self.l4flags = 0
        self.family = AF_UNSPEC
        self.command: int | None = None
        self.table = Table.CONNTRACK
        self.opts: list[O.LongOpt] = list(O.ORIGINAL_OPTS)
        self.offset = 0
        self.ext_offsets: dict[str, int] = {}
        self.status = 0
        self.status_mask = 0
        self.getopt = Getopt(self.argv)

    # -- helpers -------------------------------------------------------------------------------
    def fail(self, msg: str, code: int = PARAMETER_PROBLEM) -> CliError:
        return CliError(msg, code, tuple(self.warnings))

    def set_opt(self, name: str) -> None:
        self.options |= 1 << O.OPT_BIT[name]

    def has_opt(self, name: str) -> bool:
        return bool(self.options >> O.OPT_BIT[name] & 1)

    def long_name(self, ch: str) -> str:
        for opt in self.opts:
            if opt.val == ord(ch):
                return opt.name
        return "unknown"

    def optional_arg(self) -> str | None:
        """get_optional_arg(): the iptables trick; ignores a glued/`=` argument entirely."""
        g = self.getopt
        if g.optarg is not None:
            return None
        if g.optind < len(g.argv) and g.argv[g.optind][:1] not in ("-", "!"):
            g.optind += 1
            return g.argv[g.optind - 1]
        return None

    def set_family(self, new: int) -> None:
        if self.family == AF_UNSPEC:
            self.family = new
        elif self.family != new:
            raise self.fail("mismatched address family")

    def labelmap_init(self) -> None:
        if self.state.labelmap is not None:
            return
        names, err = read_labelmap(self.labelmap_path)
        if names is None:
            self.warnings.append(f"nfct_labelmap_new: {err}")
        self.state.labelmap = names

    def label_bits(self, arg: str) -> frozenset[int]:
        labelmap = self.state.labelmap or {}
        bits = []
        for name in arg.split(","):
            if name not in labelmap:
                raise self.fail(f"unknown label '{name}'")
            bits.append(labelmap[name])
        return frozenset(bits)

    # -- keyword lists -------------------------------------------------------------------------
    def keyword(self, token: str, keywords: tuple[tuple[str, int], ...]) -> int | None:
        n = len(token)
        low = _ascii_lower(token)
        for nat in ("SRC_NAT", "DST_NAT"):
            if n <= 7 and low == nat.lower()[:n]:
                self.warnings.append(f"WARNING: ignoring {nat}, use --{nat[:3].lower()}-nat instead")
                return 0
        for kw, val in keywords:
            if n <= len(kw) and low == _ascii_lower(kw)[:n]:
                return val
        return None

    def parse_parameter(self, arg: str, keywords: tuple[tuple[str, int], ...]) -> int:
        value = 0
        while (comma := arg.find(",")) >= 0:
            bits = None if comma == 0 else self.keyword(arg[:comma], keywords)
            if bits is None:
                raise self.fail(f"Bad parameter `{arg}'")
            value |= bits
            arg = arg[comma + 1 :]
        bits = None if not arg else self.keyword(arg, keywords)
        if bits is None:
            raise self.fail(f"Bad parameter `{arg}'")
        return value | bits

    def parse_status(self, arg: str) -> None:
        """parse_parameter_mask(): '!FLAG' goes to the mask, 'UNREPLIED' means !SEEN_REPLY."""
        while (comma := arg.find(",")) >= 0:
            if comma == 0:
                raise self.fail(f"Bad parameter `{arg}'")
            negated = arg[0] == "!"
            if negated:
                arg = arg[1:]
                comma -= 1
            if comma == 0:
                raise self.fail(f"Bad parameter `{arg}'")
            if not negated and arg.startswith("UNREPLIED"):
                self.status_mask |= O.IPS_SEEN_REPLY
                arg = arg[comma + 1 :]
                continue
            bits = self.keyword(arg[:comma], O.STATUS_KEYWORDS)
            if bits is None:
                raise self.fail(f"Bad parameter `{arg}'")
            if negated:
                self.status_mask |= bits
            else:
                self.status |= bits
            arg = arg[comma + 1 :]
        negated = arg[:1] == "!"
        if negated:
            arg = arg[1:]
        if not negated and arg.startswith("UNREPLIED"):
            self.status_mask |= O.IPS_SEEN_REPLY
            return
        bits = None if not arg else self.keyword(arg, O.STATUS_KEYWORDS)
        if bits is None:
            raise self.fail(f"Bad parameter `{arg}'")
        if negated:
            self.status_mask |= bits
        else:
            self.status |= bits

    # -- addresses -----------------------------------------------------------------------------
    def addr_opt(self, opt: str, arg: str, with_mask_tuple: bool) -> tuple[int, bytes]:
        family, packed, mask = parse_addr(arg)
        if family == AF_UNSPEC or packed is None:
            raise self.fail(f"Invalid IP address `{arg}'")
        self.set_family(family)
        maskopt = _OPT2MASKOPT.get(opt)
        if mask != -1 and maskopt is None:
            raise self.fail(f"CIDR notation unavailable for `--{self.long_name(opt)}'")
        if mask == -2:
            raise self.fail("Invalid netmask")
        if opt in _ADDR_TARGET:
            self.set_opt(_OPT2NAME[opt])
            tname, fld = _ADDR_TARGET[opt]
            tup: Tuple = getattr(self.req, tname)
            setattr(tup, fld, packed)
            tup.l3proto = family
        if mask == -1 or maskopt is None or not with_mask_tuple:
            return family, packed
        width = 4 if family == AF_INET else 16
        if mask == width * 8:
            return family, packed
        self.set_opt(_OPT2NAME[maskopt])
        setattr(self.req.mask, _ADDR_TARGET[maskopt][1], build_netmask(mask, width))
        self.req.mask.l3proto = family
        return family, packed

    def nat_opt(self, c: str) -> None:
        self.set_opt(_OPT2NAME[c])
        attr = {"n": "src_nat", "g": "dst_nat", "j": "any_nat"}[c]
        nat: Nat = getattr(self.req, attr) or Nat()
        setattr(self.req, attr, nat)
        arg = self.optional_arg()
        if arg is None:
            return
        address, port = self.split_address_and_port(arg)
        family, packed = self.addr_opt(c, address, False)
        if c != "j":
            self.req.orig.l3proto = family  # opt2attr['n'/'g'] = ATTR_ORIG_L3PROTO
        nat.addr = packed
        if port is not None:
            nat.port = c_atoi(port) & 0xFFFF

    def split_address_and_port(self, arg: str) -> tuple[str, str | None]:
        cursor = arg.find("[")
        address: str | None = None
        if cursor >= 0:
            start = cursor + 1
            close = arg.find("]", start)
            if close == start:
                raise self.fail("No IPv6 address specified")
            if close < 0:
                raise self.fail("No closing ']' around IPv6 address")
            cursor = arg.find(":", close)
            if cursor >= 0:
                address = arg[start:close]
        else:
            cursor = arg.find(":")
            if cursor >= 0 and arg.find(":", cursor + 1) < 0:
                address = arg[:cursor]
            else:
                cursor = -1
        if cursor < 0:
            return arg, None
        port = arg[cursor + 1 :]
        if not port:
            raise self.fail("No port specified after `:'")
        if not all("0" <= ch <= "9" for ch in port) or int(port) > 65535:
            raise self.fail(f"Invalid port `{port}'")
        assert address is not None
        return address, port

    # -- checks --------------------------------------------------------------------------------
    def opt_check(self, present: int, row: str, names: tuple[str | None, ...],
                  coupled: tuple[int, int] | None) -> int | None:
        """generic_opt_check(): raise on the first illegal/missing option in column order; return
        the 'partial' index when a coupled requirement is unmet, else None."""
        special = False
        for i, name in enumerate(names):
            v = row[i] if i < len(row) else "0"
            if not present >> i & 1:
                if v == "1":
                    raise self.fail(f"You need to supply the `--{name}' option for this command")
            elif v == "0":
                raise self.fail(f"Illegal option `--{name}' with this command")
            if v == "3":
                special = True
        if not special or coupled is None:
            return None
        partial = -1
        for i, m in enumerate(coupled):
            if present & m == m:
                return None
            if present & m and partial < 0:
                partial = i
        return partial

    # -- protocol extensions -------------------------------------------------------------------
    def findproto(self, name: str) -> tuple[O.ProtoExt, int] | None:
        low = _ascii_lower(name)
        for ext in O.EXTENSIONS:
            if ext.name == low:
                return ext, ext.protonum
        if name.isascii():
            import _socket

            try:
                return O.UNKNOWN, _socket.getprotobyname(name)
            except (OSError, ValueError):
                pass
        val, end = c_strtox(name, 0, False)
        if val > 255 or end == 0 or end != len(name):
            return None
        for ext in O.EXTENSIONS:
            if ext.protonum == val:
                return ext, val
        return O.UNKNOWN, val

    def ext_option(self, c: int, arg: str | None) -> None:
        h = self.state.handler
        if h is None or h is O.UNKNOWN:
            return
        code = (c - self.ext_offsets.get(h.name, 0)) & 0xFF
        act = h.actions.get(code)
        if act is None:
            return
        arg = arg or ""
        req = self.req
        if act.conv == "atoi16":
            value = c_atoi(arg) & 0xFFFF
        elif act.conv == "strtoul16":
            value = c_strtoul(arg) & 0xFFFF
        elif act.conv == "atoi8":
            value = c_atoi(arg) & 0xFF
        elif act.conv == "atoi32":
            value = c_atoi(arg) & 0xFFFFFFFF
        elif act.conv == "state":
            if arg in h.states:
                value = h.states.index(arg)
            elif h is O.TCP and arg == "LISTEN":
                value = O.TCP_CONNTRACK_LISTEN
            else:
                raise self.fail(h.state_error % arg)
        else:  # dccp role: strncasecmp(arg, "client", strlen(arg))
            low = _ascii_lower(arg)
            if len(low) <= 6 and "client".startswith(low):
                value = 0
            elif len(low) <= 6 and "server".startswith(low):
                value = 1
            else:
                raise self.fail(f"Unknown DCCP role `{arg}'")
        if act.target == "req":
            setattr(req, act.field, value)
            if act.l4 is not None:  # icmp: ATTR_L4PROTO, and the reply one if reply L3 is known
                req.orig.l4proto = act.l4
                if req.reply.l3proto is not None:
                    req.reply.l4proto = act.l4
        else:
            tup: Tuple = getattr(req, act.target)
            setattr(tup, act.field, value)
            tup.l4proto = (value >> 8) & 0xFF if act.l4 == -1 else act.l4
        self.l4flags |= 1 << act.flag

    def final_check(self, cmd: int) -> None:
        h = self.state.handler
        if h is None:
            return
        req = self.req
        if h is O.UNKNOWN:
            if req.reply.l3proto is not None and req.orig.l4proto is not None and req.reply.l4proto is None:
                req.reply.l4proto = req.orig.l4proto
            return
        coupled = (0b11, 0b1100) if h.coupled_messages else None
        partial = self.opt_check(self.l4flags, h.legality.get(cmd, ""), h.optflags, coupled)
        if partial is not None and h.coupled_messages:
            raise self.fail(h.coupled_messages[1 if partial == 1 else 0])
        if h is O.TCP:
            flags = O.IP_CT_TCP_FLAG_BE_LIBERAL | O.IP_CT_TCP_FLAG_SACK_PERM
            if (req.state or 0) >= O.TCP_CONNTRACK_TIME_WAIT:
                flags |= O.IP_CT_TCP_FLAG_CLOSE_INIT
            req.tcp_flags = flags

    # -- main loop -----------------------------------------------------------------------------
    def add_command(self, letter: str) -> None:
        table = self.check_type()
        if letter == "L":
            bit = O.CT_LIST if table in (Table.DYING, Table.UNCONFIRMED) else O.CMD2TYPE["L"][table is Table.EXPECT]
        else:
            if table in (Table.DYING, Table.UNCONFIRMED):
                raise self.fail("Can't do that command with tables `dying' and `unconfirmed'")
            bit = O.CMD2TYPE[letter][table is Table.EXPECT]
            if bit is None:
                kind = "conntrack" if table is Table.CONNTRACK else "expectations"
                raise self.fail(f"Can't do --{self.long_name(letter)} on {kind}")
        if self.command is not None:
            raise self.fail("Invalid commands combination")
        self.command = bit
        self.table = table

    def check_type(self) -> Table:
        word = self.optional_arg()
        if word is None:
            return Table.CONNTRACK
        for name in O.TABLE_NAMES:
            if name.startswith(word):
                return Table(name)
        raise self.fail(f"unknown type `{word}'")

    def run(self) -> Request:
        g = self.getopt
        req = self.req
        while (c := g.next(self.opts)) != -1:
            arg = g.optarg
            ch = chr(c) if c < 256 else ""
            if ch and ch in "LIDGFEVhCSUA":
                self.add_command(ch)
            elif ch and ch in "sdrq[]{}":
                self.addr_opt(ch, arg or "", ch not in "{}")
            elif ch == "p":
                self.set_opt("protonum")
                found = self.findproto(arg or "")
                if found is None:
                    raise self.fail(f"`{arg}' unsupported protocol")
                h, protonum = found
                self.offset += O.OPTION_OFFSET
                self.ext_offsets[h.name] = self.offset
                self.opts += [O.LongOpt(name, O.REQUIRED_ARG, val + self.offset) for name, val in h.opts]
                self.state.handler = h
                req.proto, req.l4proto = h.name, protonum
                req.orig.l4proto = protonum
            elif ch == "t":
                self.set_opt("timeout")
                req.timeout = c_atol(arg or "") & 0xFFFFFFFF
            elif ch == "u":
                self.set_opt("status")
                self.parse_status(arg or "")
                req.status = self.status
                if self.status_mask == 0:
                    self.status_mask = self.status
                req.mark_value = self.status
                req.status_filter = (self.status, self.status_mask)
            elif ch == "e":
                self.set_opt("event-mask")
                req.event_mask |= self.parse_parameter(arg or "", O.EVENT_KEYWORDS)
            elif ch == "o":
                self.set_opt("output")
                self.state.output_mask |= self.parse_parameter(arg or "", O.OUTPUT_KEYWORDS)
                if self.state.output_mask & O.O_CL:
                    self.labelmap_init()
                if self.state.output_mask & O.O_SAVE and self.state.output_mask & O.O_SAVE_CONFLICTS:
                    raise self.fail("cannot combine save output with any other output type, use -o save only",
                                    OTHER_PROBLEM)
            elif ch == "z":
                self.set_opt("zero")
            elif ch and ch in "ngj":
                self.nat_opt(ch)
            elif ch and ch in "w()":
                self.set_opt(_OPT2NAME[ch])
                setattr(req, {"w": "zone", "(": "orig_zone", ")": "reply_zone"}[ch], c_strtoul(arg or "") & 0xFFFF)
            elif ch and ch in "ic":
                self.set_opt(_OPT2NAME[ch])
                setattr(req, "id" if ch == "i" else "secmark", c_strtoul(arg or "") & 0xFFFFFFFF)
            elif ch == "m":
                self.set_opt("mark")
                text = arg or ""
                value, end = c_strtox(text, 0, False)
                mask = c_strtoul(text[end + 1 :]) if text[end : end + 1] == "/" else 0xFFFFFFFF
                req.mark_value, req.mark_mask = value & 0xFFFFFFFF, mask & 0xFFFFFFFF
                req.mark_filter = (req.mark_value, req.mark_mask)
            elif ch and ch in "l<>":
                self.label_opt(ch, arg)
            elif ch == "a":
                self.warnings.append("WARNING: ignoring -a, deprecated option.")
            elif ch == "f":
                self.set_opt("family")
                text = arg or ""
                if text.startswith("ipv4"):
                    self.set_family(AF_INET)
                elif text.startswith("ipv6"):
                    self.set_family(AF_INET6)
                else:
                    raise self.fail(f"`{text}' unsupported protocol")
            elif ch == "b":
                self.set_opt("buffer-size")
                req.buffer_size = c_atol(arg or "") & _ULONG_MAX
            elif c == _COLON:
                raise self.fail(f"option `{g.argv[g.optind - 1]}' requires an argument")
            elif c == _QUESTION:
                raise self.fail(f"unknown option `{g.argv[g.optind - 1]}'")
            else:
                self.ext_option(c, arg)
        return self.finish()

    def label_opt(self, ch: str, arg: str | None) -> None:
        self.set_opt(_OPT2NAME[ch])
        self.labelmap_init()
        if self.has_opt("label-add") and self.has_opt("label-del"):
            raise self.fail("cannot use --label-add and --label-del at the same time", OTHER_PROBLEM)
        if ch == ">":
            arg = self.optional_arg()
            if arg is None:
                return
        text = arg or ""
        bits = self.label_bits(text)
        names = tuple(text.split(","))
        req = self.req
        if ch == "l":
            req.labels = bits | (req.labels or frozenset())
            req.label_names += names
        else:
            req.label_modify = bits | (req.label_modify or frozenset())
            req.label_modify_names += names

    def finish(self) -> Request:
        req = self.req
        cmd = O.NO_COMMAND if self.command is None else self.command
        if self.family == AF_UNSPEC and cmd not in _UNSPEC_OK:
            self.family = AF_INET
        if self.has_opt("any-nat") and (self.has_opt("src-nat") or self.has_opt("dst-nat")):
            raise self.fail("cannot specify `--src-nat' or `--dst-nat' with `--any-nat'")
        coupled = tuple(sum(1 << O.OPT_BIT[n] for n in pair) for pair in O.COUPLED_PAIRS)
        partial = self.opt_check(self.options, O.COMMANDS_V_OPTIONS[cmd], O.OPT_NAMES, coupled)  # type: ignore[arg-type]
        if partial is not None:
            raise self.fail(O.COUPLED_MESSAGES[1 if partial == 1 else 0])
        if cmd != O.CT_HELP:
            self.final_check(cmd)

        req.command, table = _CMD_ENUM[cmd]
        req.table = self.table if cmd == O.CT_LIST else table
        req.cmd_index = cmd
        req.family = self.family
        req.options = frozenset(n for i, n in enumerate(O.OPT_NAMES) if self.options >> i & 1)
        h = self.state.handler
        if h is not None and h.optflags:
            req.l4_options = frozenset(n for i, n in enumerate(h.optflags) if n and self.l4flags >> i & 1)
        self.set_output(self.state.output_mask)
        return req

    def set_output(self, mask: int) -> None:
        self.req.output_mask = mask
        self.req.output = frozenset(name for bit, name in O.OUTPUT_FLAG_NAMES.items() if mask & bit)


def exec_checks(req: Request) -> CliError | None:
    """Checks C makes in do_command_ct() just before talking to the kernel (-z with filters,
    --mask-src without --src). Returns the error instead of raising so callers can defer it."""
    opts = req.options
    if req.command is Command.LIST and req.table in (Table.DYING, Table.UNCONFIRMED):
        return None
    if req.command not in (Command.LIST, Command.UPDATE, Command.DELETE, Command.EVENT):
        return None
    if req.table is Table.EXPECT:
        return None
    prelude = tuple(req.warnings)
    if req.command is Command.LIST and "zero" in opts and opts & O.CT_COMPARISON:
        return CliError("Can't use -z with filtering parameters", PARAMETER_PROBLEM, prelude)
    if "mask-src" in opts and "src" not in opts:
        return CliError("Can't use --mask-src without --src", PARAMETER_PROBLEM, prelude)
    if "mask-dst" in opts and "dst" not in opts:
        return CliError("Can't use --mask-dst without --dst", PARAMETER_PROBLEM, prelude)
    return None


def _parse(argv: list[str], prog: str, state: BatchState, labelmap_path: str | None) -> Request:
    return _Parser(argv, prog, state, labelmap_path or CONNLABEL_CONF).run()


def parse_args(argv: list[str], *, prog: str = "conntrack", labelmap_path: str | None = None) -> Request:
    """Parse a conntrack command line (without argv[0]) like conntrack 1.4.7 does.

    `prog` is argv[0]: C prints it in the usage text and, through a getopt quirk, in
    `unknown option` for a bad first argument such as `-Yx`.
    """
    if len(argv) > 1 and argv[0] in ("-R", "--load-file"):
        return Request(command=Command.LOAD_FILE, prog=prog, load_file=argv[1])
    req = _parse(list(argv), prog, BatchState(), labelmap_path)
    err = exec_checks(req)
    if err is not None:
        if req.command is Command.EVENT and "buffer-size" in req.options:
            req.deferred_error = err
        else:
            raise err
    return req


# ---------------------------------------------------------------------------------------------
# -R / --load-file
# ---------------------------------------------------------------------------------------------

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
    for chunk in _fgets_chunks(data, 10240):
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
