"""The int8 search's trial table on a terminal: every trial's full name, wrapped inside its column.

A trial is named by the changes it makes, joined by '+' ("first-last-float+conv-gemm-only+per-tensor+
relu-before-pool+nhwc-flatten+pad-channels-8+entropy"): names outgrow any column, and a name cut at the
column's width makes several rows look identical. Standard library only.
"""

from __future__ import annotations

import re

NAME_WIDTH = 34  # the trial column of `mnist-edge quantize`'s table
INDENT = "  "  # continuation lines of a name: the row's further lines read as one name


def wrap_name(name: str, width: int = NAME_WIDTH) -> list[str]:
    """``name`` as lines of at most ``width`` characters, broken after a '+' so each change stays whole
    (a change longer than a line is cut where the line ends); lines after the first are indented."""
    if width <= len(INDENT):
        raise ValueError(f"a name column of {width} characters cannot hold an indented line")
    lines: list[str] = []
    line = ""
    for token in re.split(r"(?<=\+)", name):
        room = width - (len(INDENT) if lines else 0)
        if line and len(line) + len(token) > room:
            lines.append(line)
            line, room = "", width - len(INDENT)
        while len(token) > room:  # one change wider than the column (line is empty here)
            lines.append(token[:room])
            token, room = token[room:], width - len(INDENT)
        line += token
    lines.append(line)
    return lines[:1] + [INDENT + rest for rest in lines[1:]]


def trial_rows(fmt: str, name: str, *cells, width: int = NAME_WIDTH) -> list[str]:
    """One table row: ``fmt`` (whose first field is the name column, ``width`` wide) with the full ``name``
    and ``cells`` on its first line, then the name's further lines alone in its column."""
    parts = wrap_name(name, width)
    blank = ("",) * len(cells)
    return [fmt.format(parts[0], *cells)] + [fmt.format(part, *blank).rstrip() for part in parts[1:]]
