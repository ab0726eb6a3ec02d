"""Verbatim help texts of conntrack 1.4.7 (src/conntrack.c `usage`, extensions' `help()`).

Why verbatim: scripts and the upstream man page tests compare this output byte for byte,
typos included ("addres", the duplicated `--tuple-port-src` lines).
"""

from __future__ import annotations

VERSION = "1.4.7"

USAGE_COMMANDS = (
    "Commands:\n"
    "  -L [table] [options]\t\tList conntrack or expectation table\n"
    "  -G [table] parameters\t\tGet conntrack or expectation\n"
    "  -D [table] parameters\t\tDelete conntrack or expectation\n"
    "  -I [table] parameters\t\tCreate a conntrack or expectation\n"
    "  -U [table] parameters\t\tUpdate a conntrack\n"
    "  -E [table] [options]\t\tShow events\n"
    "  -F [table]\t\t\tFlush table\n"
    "  -C [table]\t\t\tShow counter\n"
    "  -S\t\t\t\tShow statistics\n"
)

USAGE_TABLES = "Tables: conntrack, expect, dying, unconfirmed\n"

USAGE_CONNTRACK_PARAMETERS = (
    "Conntrack parameters and options:\n"
    "  -n, --src-nat ip\t\t\tsource NAT ip\n"
    "  -g, --dst-nat ip\t\t\tdestination NAT ip\n"
    "  -j, --any-nat ip\t\t\tsource or destination NAT ip\n"
    "  -m, --mark mark\t\t\tSet mark\n"
    "  -c, --secmark secmark\t\t\tSet selinux secmark\n"
    "  -e, --event-mask eventmask\t\tEvent mask, eg. NEW,DESTROY\n"
    "  -z, --zero \t\t\t\tZero counters while listing\n"
    "  -o, --output type[,...]\t\tOutput format, eg. xml\n"
    "  -l, --label label[,...]\t\tconntrack labels\n"
)

USAGE_EXPECTATION_PARAMETERS = (
    "Expectation parameters and options:\n"
    "  --tuple-src ip\tSource address in expect tuple\n"
    "  --tuple-dst ip\tDestination address in expect tuple\n"
)

USAGE_UPDATE_PARAMETERS = (
    "Updating parameters and options:\n"
    "  --label-add label\tAdd label\n"
    "  --label-del label\tDelete label\n"
)

USAGE_PARAMETERS = (
    "Common parameters and options:\n"
    "  -s, --src, --orig-src ip\t\tSource address from original direction\n"
    "  -d, --dst, --orig-dst ip\t\tDestination address from original direction\n"
    "  -r, --reply-src ip\t\tSource addres from reply direction\n"
    "  -q, --reply-dst ip\t\tDestination address from reply direction\n"
    "  -p, --protonum proto\t\tLayer 4 Protocol, eg. 'tcp'\n"
    "  -f, --family proto\t\tLayer 3 Protocol, eg. 'ipv6'\n"
    "  -t, --timeout timeout\t\tSet timeout\n"
    "  -u, --status status\t\tSet status, eg. ASSURED\n"
    "  -w, --zone value\t\tSet conntrack zone\n"
    "  --orig-zone value\t\tSet zone for original direction\n"
    "  --reply-zone value\t\tSet zone for reply direction\n"
    "  -b, --buffer-size\t\tNetlink socket buffer size\n"
    "  --mask-src ip\t\t\tSource mask address\n"
    "  --mask-dst ip\t\t\tDestination mask address\n"
)

_PORTS_HELP = (
    "  --orig-port-src\t\toriginal source port\n"
    "  --orig-port-dst\t\toriginal destination port\n"
    "  --reply-port-src\t\treply source port\n"
    "  --reply-port-dst\t\treply destination port\n"
    "  --mask-port-src\t\tmask source port\n"
    "  --mask-port-dst\t\tmask destination port\n"
    "  --tuple-port-src\t\texpectation tuple src port\n"
    "  --tuple-port-src\t\texpectation tuple dst port\n"
)

# Per-extension help bodies (what each `help()` prints after "Proto `NAME' help:").
EXTENSION_HELP: dict[str, str] = {
    "tcp": _PORTS_HELP + "  --state\t\t\tTCP state, fe. ESTABLISHED\n",
    "udp": _PORTS_HELP,
    "udplite": _PORTS_HELP,
    "sctp": _PORTS_HELP
    + "  --state\t\t\tSCTP state, fe. ESTABLISHED\n"
    + "  --orig-vtag\t\toriginal verification tag\n"
    + "  --reply-vtag\t\treply verification tag\n",
    "dccp": _PORTS_HELP + "  --state\t\t\tDCCP state, fe. RESPOND\n",
    "icmp": "  --icmp-type\t\t\ticmp type\n  --icmp-code\t\t\ticmp code\n  --icmp-id\t\t\ticmp id\n",
    "icmpv6": "  --icmpv6-type\t\t\ticmpv6 type\n  --icmpv6-code\t\t\ticmpv6 code\n  --icmpv6-id\t\t\ticmpv6 id\n",
    "gre": (
        "  --orig-key-src\t\toriginal source key\n"
        "  --orig-key-dst\t\toriginal destination key\n"
        "  --reply-key-src\t\treply source key\n"
        "  --reply-key-dst\t\treply destination key\n"
        "  --mask-key-src\t\tmask source key\n"
        "  --mask-key-dst\t\tmask destination key\n"
        "  --tuple-key-src\t\texpectation tuple src key\n"
        "  --tuple-key-src\t\texpectation tuple dst key\n"
    ),
    "unknown": "  no options (unsupported)\n",
}


def usage_text(prog: str = "conntrack") -> str:
    """What `conntrack -h` (and `conntrack` with no command) writes to stdout; `prog` is argv[0]."""
    return (
        f"Command line interface for the connection tracking system. Version {VERSION}\n"
        f"Usage: {prog} [commands] [options]\n"
        f"\n{USAGE_COMMANDS}"
        f"\n{USAGE_TABLES}"
        f"\n{USAGE_CONNTRACK_PARAMETERS}"
        f"\n{USAGE_EXPECTATION_PARAMETERS}"
        f"\n{USAGE_UPDATE_PARAMETERS}"
        f"\n{USAGE_PARAMETERS}\n"
    )


def _protocol_name(protonum: int) -> str | None:
    """getprotobynumber() from /etc/protocols (Python's socket module has no such call)."""
    try:
        with open("/etc/protocols", encoding="latin-1") as fh:
            for line in fh:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and fields[1] == str(protonum):
                    return fields[0]
    except OSError:
        return None
    return None


def extension_help_text(proto: str, protonum: int) -> str:
    """`-h -p PROTO` appendix: C names an unknown protocol after /etc/protocols, else 'unknown'."""
    name = proto
    if proto == "unknown":
        name = _protocol_name(protonum) or "unknown"
    return f"Proto `{name}' help:\n" + EXTENSION_HELP[proto]


def version_text() -> str:
    """`conntrack -V` stdout."""
    return f"conntrack v{VERSION} (conntrack-tools)\n"
