"""The outcome of an integrity check, shared by the preprocessor store and the registry."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IntegrityReport:
    """Problems found while re-hashing an artifact's files; truthy when there are none.

    Attributes:
        subject: the checked artifact (preprocessor or model id).
        problems: one line per problem, naming the file.
    """

    subject: str
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.problems
