"""argv -> Request, reproducing conntrack 1.4.7's `do_parse()` bit for bit.

Why hand-rolled: argparse cannot mimic GNU getopt_long (permutation, `-Lexpect`, unambiguous
prefixes, the argv[optind-1] quirk in error messages) nor C's lenient number parsing
(atoi/strtoul wrap-around), and scripts depend on both. The few libc routines involved are
re-implemented with glibc semantics beside this module: ``getopt.py`` (getopt_long), ``libc.py``
(strtol/strtoul, inet_aton); ``labelmap.py`` reads connlabel.conf, ``batch.py`` parses -R files.
"""

from __future__ import annotations

from . import options as O
from .errors import OTHER_PROBLEM, PARAMETER_PROBLEM, CliError
from .getopt import COLON, QUESTION, Getopt
from .labelmap import CONNLABEL_CONF, read_labelmap
from .libc import ULONG_MAX, ascii_lower, build_netmask, c_atoi, c_atol, c_strtoul, c_strtox, parse_addr
from .request import AF_INET, AF_INET6, AF_UNSPEC, Command, Nat, Request, Table, Tuple

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
        low = ascii_lower(token)
        for nat in ("SRC_NAT", "DST_NAT"):
            if n <= 7 and low == nat.lower()[:n]:
                self.warnings.append(f"WARNING: ignoring {nat}, use --{nat[:3].lower()}-nat instead")
                return 0
        for kw, val in keywords:
            if n <= len(kw) and low == ascii_lower(kw)[:n]:
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
            self.status_item(arg, arg[:comma], negated)
            arg = arg[comma + 1 :]
        negated = arg[:1] == "!"
        if negated:
            arg = arg[1:]
        self.status_item(arg, arg, negated)

    def status_item(self, rest: str, word: str, negated: bool) -> None:
        """One -u item: its bits to the status, or (negated) to the mask; C's error prints ``rest``."""
        if not negated and rest.startswith("UNREPLIED"):
            self.status_mask |= O.IPS_SEEN_REPLY
            return
        bits = self.keyword(word, O.STATUS_KEYWORDS) if word else None
        if bits is None:
            raise self.fail(f"Bad parameter `{rest}'")
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
        low = ascii_lower(name)
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
            low = ascii_lower(arg)
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
                self.proto_opt(arg)
            elif ch == "t":
                self.set_opt("timeout")
                req.timeout = c_atol(arg or "") & 0xFFFFFFFF
            elif ch == "u":
                self.status_opt(arg)
            elif ch == "e":
                self.set_opt("event-mask")
                req.event_mask |= self.parse_parameter(arg or "", O.EVENT_KEYWORDS)
            elif ch == "o":
                self.output_opt(arg)
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
                self.mark_opt(arg)
            elif ch and ch in "l<>":
                self.label_opt(ch, arg)
            elif ch == "a":
                self.warnings.append("WARNING: ignoring -a, deprecated option.")
            elif ch == "f":
                self.family_opt(arg)
            elif ch == "b":
                self.set_opt("buffer-size")
                req.buffer_size = c_atol(arg or "") & ULONG_MAX
            elif c == COLON:
                raise self.fail(f"option `{g.argv[g.optind - 1]}' requires an argument")
            elif c == QUESTION:
                raise self.fail(f"unknown option `{g.argv[g.optind - 1]}'")
            else:
                self.ext_option(c, arg)
        return self.finish()

    def proto_opt(self, arg: str | None) -> None:
        """-p: the protocol's handler adds its options (at a new offset) to the long options."""
        self.set_opt("protonum")
        found = self.findproto(arg or "")
        if found is None:
            raise self.fail(f"`{arg}' unsupported protocol")
        h, protonum = found
        self.offset += O.OPTION_OFFSET
        self.ext_offsets[h.name] = self.offset
        self.opts += [O.LongOpt(name, O.REQUIRED_ARG, val + self.offset) for name, val in h.opts]
        self.state.handler = h
        req = self.req
        req.proto, req.l4proto = h.name, protonum
        req.orig.l4proto = protonum

    def status_opt(self, arg: str | None) -> None:
        self.set_opt("status")
        self.parse_status(arg or "")
        req = self.req
        req.status = self.status
        if self.status_mask == 0:
            self.status_mask = self.status
        req.mark_value = self.status
        req.status_filter = (self.status, self.status_mask)

    def output_opt(self, arg: str | None) -> None:
        self.set_opt("output")
        self.state.output_mask |= self.parse_parameter(arg or "", O.OUTPUT_KEYWORDS)
        if self.state.output_mask & O.O_CL:
            self.labelmap_init()
        if self.state.output_mask & O.O_SAVE and self.state.output_mask & O.O_SAVE_CONFLICTS:
            raise self.fail("cannot combine save output with any other output type, use -o save only",
                            OTHER_PROBLEM)

    def mark_opt(self, arg: str | None) -> None:
        self.set_opt("mark")
        text = arg or ""
        value, end = c_strtox(text, 0, False)
        mask = c_strtoul(text[end + 1 :]) if text[end : end + 1] == "/" else 0xFFFFFFFF
        req = self.req
        req.mark_value, req.mark_mask = value & 0xFFFFFFFF, mask & 0xFFFFFFFF
        req.mark_filter = (req.mark_value, req.mark_mask)

    def family_opt(self, arg: str | None) -> None:
        self.set_opt("family")
        text = arg or ""
        if text.startswith("ipv4"):
            self.set_family(AF_INET)
        elif text.startswith("ipv6"):
            self.set_family(AF_INET6)
        else:
            raise self.fail(f"`{text}' unsupported protocol")

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
