"""The one record type that flows through scan, unlearning and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Dialogue:
    """A single-turn dialogue.

    Attributes:
        prompt: the user turn.
        response: the assistant turn ("" when only the prompt is known, e.g. before generation).
        system: optional system prompt; ``None`` uses the chat template's default.
        meta: free-form metadata (source, category, judge scores, ids...). Must be JSON-serialisable.
    """

    prompt: str
    response: str = ""
    system: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def with_response(self, response: str, **meta: Any) -> Dialogue:
        """A copy with a new response and extra metadata merged in."""
        return replace(self, response=response, meta={**self.meta, **meta})

    def prompt_only(self) -> Dialogue:
        """A copy without the response (system turn and metadata kept), ready to be answered again."""
        return replace(self, response="")

    def to_json(self) -> dict[str, Any]:
        """A plain dict for JSONL output (``system`` omitted when unset)."""
        out: dict[str, Any] = {"prompt": self.prompt, "response": self.response}
        if self.system is not None:
            out["system"] = self.system
        if self.meta:
            out["meta"] = self.meta
        return out
