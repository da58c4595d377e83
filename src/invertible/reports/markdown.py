"""A report as markdown: a table of models (:class:`ModelRow`) and sections.

Example:
    >>> r = Report("demo")
    >>> r.add_row(ModelRow("maf", "MAF", 10, -1.0, 0.1, 2.0, 100.0, 10.0))
    >>> print(r.table_markdown().splitlines()[2])
    | maf | MAF | 10 | -1.00 ± 0.10 | 2.0 | 100 | 10 | |
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from invertible.files import atomic_write_text

__all__ = ["ModelRow", "Report", "Section", "markdown_table"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table of ``rows`` (cells formatted with ``str``) under ``header``.

    Example:
        >>> print(markdown_table(["a", "b"], [[1, "x"]]))
        | a | b |
        |---|---|
        | 1 | x |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class ModelRow:
    """One row of the report table."""

    name: str
    preset: str
    parameters: int
    test_log_prob: float | None
    two_se: float | None
    train_time: float
    density_per_s: float | None
    sampling_per_s: float | None
    note: str = ""
    steps: int = 0
    stopped: str = ""
    test_points: int = 0
    bits_per_dim: float | None = None

    def cells(self) -> list[str]:
        """The row's table cells, formatted."""

        def num(v: float | None, fmt: str) -> str:
            return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)

        ll = (
            "n/a"
            if self.test_log_prob is None or not math.isfinite(self.test_log_prob)
            else f"{self.test_log_prob:.2f} ± {self.two_se or 0:.2f}"
        )
        return [
            self.name,
            self.preset,
            f"{self.parameters:,}",
            ll,
            f"{self.train_time:.1f}",
            num(self.density_per_s, ",.0f"),
            num(self.sampling_per_s, ",.0f"),
            self.note,
        ]


@dataclass
class Section:
    """A titled block of markdown, with figures (paths relative to the report)."""

    title: str
    body: str
    figures: list[str] = field(default_factory=list)


class Report:
    """A report: a table of :class:`ModelRow` and a list of :class:`Section` s."""

    HEADER = (
        "model",
        "preset",
        "parameters",
        "test log-likelihood (nats, ± 2 s.e.)",
        "training time (s)",
        "density (samples/s)",
        "sampling (samples/s)",
        "note",
    )

    def __init__(self, title: str, intro: str = "") -> None:
        self.title = title
        self.intro = intro
        self.rows: list[ModelRow] = []
        self.sections: list[Section] = []
        self.meta: dict[str, Any] = {}

    def add_row(self, row: ModelRow) -> None:
        """Append a row to the table."""
        self.rows.append(row)

    def add_section(self, title: str, body: str, figures: Sequence[str] = ()) -> None:
        """Append a section (markdown ``body`` and figure paths relative to the report)."""
        self.sections.append(Section(title, body, list(figures)))

    def table_markdown(self) -> str:
        """The table of rows as markdown."""
        lines = [
            "| " + " | ".join(self.HEADER) + " |",
            "|" + "|".join("---" for _ in self.HEADER) + "|",
        ]
        for row in self.rows:
            lines.append(("| " + " | ".join(row.cells()) + " |").replace("|  |", "| |"))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The whole report as markdown."""
        parts = [f"# {self.title}", ""]
        if self.intro:
            parts += [self.intro, ""]
        parts += [self.table_markdown(), ""]
        for s in self.sections:
            parts += [f"## {s.title}", "", s.body.rstrip(), ""]
            parts += [f"![{s.title}]({fig})" for fig in s.figures]
            if s.figures:
                parts.append("")
        return "\n".join(parts)

    def write(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``report.md`` and ``results.json`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "report.md"
        atomic_write_text(path, self.to_markdown())
        results = {
            "title": self.title,
            "meta": self.meta,
            "rows": [asdict(r) for r in self.rows],
            "sections": [asdict(s) for s in self.sections],
        }
        atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
        return path
