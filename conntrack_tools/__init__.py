"""Python re-implementation of netfilter's conntrack-tools (conntrack, conntrackd)."""

__version__ = "0.1.0"
# The version string the C tools print; scripts parse it, so we report the release we mirror.
COMPAT_VERSION = "1.4.7"
