"""Python re-implementation of netfilter's conntrack-tools (conntrack, conntrackd)."""

# The version is galaxy.yml's (setup.py); looked up lazily so `conntrack -V` does not pay for importlib.metadata.


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("conntrack-tools-py")
        except PackageNotFoundError:  # pragma: no cover - a bare checkout on sys.path
            return "0+unknown"
    raise AttributeError(name)

# The version string the C tools print; scripts parse it, so we report the release we mirror.
COMPAT_VERSION = "1.4.7"
