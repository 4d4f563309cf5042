"""What a guided (structured-output) request asks the output to match (no xgrammar here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GuidedKind = Literal["json", "json_object", "regex", "choice", "grammar", "lark",
                     "structural_tag"]

GUIDED_KINDS: tuple[str, ...] = ("json", "json_object", "regex", "choice", "grammar", "lark",
                                 "structural_tag")
"""Every kind ``GuidedSpec.kind`` accepts."""


@dataclass(frozen=True)
class GuidedSpec:
    """One structured-output constraint; equal specs compile to the same grammar.

    The API builds it from guided_json / guided_regex / guided_choice / guided_grammar,
    response_format or tool_choice; ``toolkit.guided`` compiles it with xgrammar.
    """

    kind: GuidedKind
    """json (a JSON schema), json_object (any JSON object), regex, choice (one of a list of
    strings), grammar (EBNF / GBNF), lark, or structural_tag (xgrammar's JSON format)."""
    value: str = ""
    """The schema as JSON text, the regex, the grammar, or the structural tag as JSON;
    for choice, a JSON list of the strings."""
    whitespace_pattern: str | None = None
    """JSON only: a regex for the whitespace allowed between tokens; None means compact
    single spaces (xgrammar's any_whitespace=False)."""
    param: str = "guided_json"
    """The request field it came from, named by a 400 when it does not compile."""

    def __post_init__(self) -> None:
        if self.kind not in GUIDED_KINDS:
            raise ValueError(f"guided kind {self.kind!r} is not one of {', '.join(GUIDED_KINDS)}")
