"""Metric files of a run: ``metrics.jsonl``, ``metrics.csv`` and optional TensorBoard."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CSV_COLUMNS", "METRICS_CSV", "METRICS_JSONL", "MetricsLogger"]

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CSV_COLUMNS = (
    "step",
    "epoch",
    "train_loss",
    "val_log_prob",
    "best_val_log_prob",
    "lr",
    "samples_per_s",
    "elapsed_s",
    "skipped_steps",
    "event",
    "val_bits_per_dim",
)


class MetricsLogger:
    """Appends metric records to ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard)."""

    def __init__(self, out_dir: Path, history: list[dict[str, Any]] | None = None) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = out_dir / METRICS_JSONL
        self.csv = out_dir / METRICS_CSV
        # (re)write from the history, so a resumed run has exactly one record per step
        with open(self.jsonl, "w") as fh:
            for rec in history or []:
                fh.write(json.dumps(rec) + "\n")
        with open(self.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for rec in history or []:
                writer.writerow(rec)
        self.tb = None
        try:  # optional dependency: tensorboard may not be installed
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record to every sink."""
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(dict(record)) + "\n")
        with open(self.csv, "a", newline="") as fh:
            csv.DictWriter(fh, CSV_COLUMNS, extrasaction="ignore").writerow(dict(record))
        if self.tb is not None:
            for key in ("train_loss", "val_log_prob", "lr", "samples_per_s"):
                value = record.get(key)
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record.get("step", 0))

    def close(self) -> None:
        """Flush and close TensorBoard, if it was open."""
        if self.tb is not None:
            self.tb.close()
