"""Output options shared by every renderer (what ``-o`` asked for).

A frozen dataclass so one instance can be built once per command and passed to
the hot loop without copying; the renderers read its fields into locals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutputOptions:
    """The ``-o`` flags of ``conntrack``, plus our own ``json``.

    ``label_map`` is the loaded connlabel.conf (bit -> name).  C prints labels only when
    its label map is loaded, which happens with ``-o labels`` *or* any ``-l``/``--label-add``/
    ``--label-del`` option, and only if connlabel.conf could be read.  The CLI therefore
    sets ``labels=True`` in all those cases and passes the map it read (``None`` when the
    file is missing: then no labels are printed, exactly as C).

    ``userspace`` has no effect (``-o userspace`` is a no-op in 1.4.7: the
    ``[USERSPACE]`` suffix is printed whenever an event carries a portid); it is kept
    so the option parser can store it.

    ``xml_userspace_c_bug`` selects where the ``[USERSPACE]`` event suffix goes in XML.
    """

    extended: bool = False
    xml: bool = False
    save: bool = False
    json: bool = False
    id: bool = False
    ktimestamp: bool = False
    timestamp: bool = False
    labels: bool = False
    userspace: bool = False
    label_map: Mapping[int, str] | None = None
    # COMPAT (docs/compat.md): conntrack 1.4.7 prints `-E -o xml` events caused by a
    # process as `<flow ...>...</flow> [USERSPACE] portid=N progname=X`, i.e. plain text
    # after the element, which makes the stream invalid XML that no parser accepts.
    # We fix this by default: the information goes inside the element, just before
    # `</flow>`, as `<userspace><portid>N</portid><progname>X</progname></userspace>`
    # (progname omitted when unknown).  Set this flag to True to reproduce the C bytes.
    xml_userspace_c_bug: bool = False

    @property
    def show_labels(self) -> bool:
        """True when C would have a label map to print with."""
        return self.labels and self.label_map is not None


DEFAULT_OPTIONS = OutputOptions()
