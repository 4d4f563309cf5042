"""guided_whitespace_pattern: a JSON-schema grammar whose whitespace is the user's regex.

xgrammar converts a schema to EBNF with a bounded-whitespace option that names every
place whitespace may go (``whitespace_<k>{0, N}`` references to rules matching one
``[ \\n\\r\\t]``). Each of those references is replaced by one rule, ``Regex(pattern)``,
so the pattern decides the whitespace between every pair of JSON tokens.
"""

from __future__ import annotations

import json
import re

import xgrammar as xgr

JSON_WHITESPACE = frozenset(" \t\n\r")
"""The characters JSON allows between tokens; a pattern may match only these."""

WS_RULE = "toolkit_json_ws"
"""Name of the rule the pattern becomes."""

_MARK_COUNT = 7
"""max_whitespace_cnt of the template: makes every whitespace reference ``{0, 7}``."""

_WS_DEF = re.compile(r"^(whitespace(?:_\d+)?) ::= \(\(\[ \\n\\r\\t\]\)\)$", re.MULTILINE)
_WS_REF = re.compile(r"\b(whitespace(?:_\d+)?)\{0, " + str(_MARK_COUNT) + r"\}")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "0": "\0", "a": "\a",
            "b": "\b", "e": "\x1b"}


class WhitespacePatternError(ValueError):
    """The pattern cannot be honoured exactly (not a regex, or it matches a character
    JSON does not allow between tokens)."""


def json_ebnf(schema_json: str, pattern: str, *, strict_mode: bool = True) -> str:
    """EBNF for instances of ``schema_json`` whose whitespace between tokens matches
    ``pattern``; raises ``WhitespacePatternError`` for a pattern that cannot be honoured
    and whatever xgrammar raises for a bad schema."""
    check_pattern(pattern)
    template = str(xgr.Grammar.from_json_schema(
        schema_json, any_whitespace=True, strict_mode=strict_mode,
        max_whitespace_cnt=_MARK_COUNT))
    names = set(_WS_DEF.findall(template))
    lines = [line for line in template.splitlines()
             if line.split(" ::= ", 1)[0] not in names]
    body = _WS_REF.sub(lambda m: WS_RULE if m.group(1) in names else m.group(0),
                       "\n".join(lines))
    return f"{body}\n{WS_RULE} ::= Regex({json.dumps(pattern)})\n"


def check_pattern(pattern: str) -> None:
    """Raise ``WhitespacePatternError`` unless every string ``pattern`` matches is made of
    JSON whitespace (space, tab, newline, carriage return)."""
    try:
        ebnf = str(xgr.Grammar.from_regex(pattern))
    except (RuntimeError, ValueError) as exc:
        raise WhitespacePatternError(f"not a supported regex ({_reason(exc)})") from None
    for lo, hi in _terminal_ranges(ebnf):
        bad = next((c for c in range(lo, hi + 1) if chr(c) not in JSON_WHITESPACE), None)
        if bad is not None:
            raise WhitespacePatternError(
                f"it matches {chr(bad)!r}, which is not JSON whitespace; only space, \\t, "
                "\\n and \\r may appear between JSON tokens")


def _terminal_ranges(ebnf: str) -> list[tuple[int, int]]:
    """Code-point ranges of every string literal and character class in ``ebnf`` (an
    xgrammar-printed grammar); a negated class counts as everything outside it."""
    ranges, i = [], 0
    while i < len(ebnf):
        if ebnf[i] == '"':
            chars, i = _read_until(ebnf, i + 1, '"')
            ranges += [(ord(c), ord(c)) for c in chars]
        elif ebnf[i] == "[":
            negated = ebnf.startswith("[^", i)
            chars, i = _read_until(ebnf, i + (2 if negated else 1), "]", keep_dash=True)
            ranges += _negate(_class_ranges(chars)) if negated else _class_ranges(chars)
        else:
            i += 1
    return ranges


def _read_until(text: str, i: int, end: str, keep_dash: bool = False) -> tuple[list, int]:
    """Decoded characters from ``i`` to the unescaped ``end``; an escaped ``-`` stays a
    tuple ``("-",)`` in classes so that it is not read as a range."""
    chars = []
    while text[i] != end:
        if text[i] == "\\":
            char, i = _escape(text, i + 1)
            chars.append(("-",) if keep_dash and char == "-" else char)
        else:
            chars.append(text[i])
            i += 1
    return chars, i + 1


def _escape(text: str, i: int) -> tuple[str, int]:
    kind = text[i]
    widths = {"x": 2, "u": 4, "U": 8}
    if kind in widths:
        width = widths[kind]
        return chr(int(text[i + 1:i + 1 + width], 16)), i + 1 + width
    return _ESCAPES.get(kind, kind), i + 1


def _class_ranges(chars: list) -> list[tuple[int, int]]:
    plain = [c[0] if isinstance(c, tuple) else c for c in chars]
    ranges, i = [], 0
    while i < len(chars):
        if i + 2 < len(chars) and chars[i + 1] == "-":
            ranges.append((ord(plain[i]), ord(plain[i + 2])))
            i += 3
        else:
            ranges.append((ord(plain[i]), ord(plain[i])))
            i += 1
    return ranges


def _negate(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The complement of ``ranges`` in [0, 0x10FFFF]."""
    out, start = [], 0
    for lo, hi in sorted(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = max(start, hi + 1)
    if start <= 0x10FFFF:
        out.append((start, 0x10FFFF))
    return out


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text)
