"""Reports: figures (:mod:`~invertible.reports.plots`), markdown tables and sections
(:mod:`~invertible.reports.markdown`), the distillation comparison
(:mod:`~invertible.reports.distillation`) and the lecture's main job
(:mod:`~invertible.reports.lecture`).
"""

from invertible.reports.distillation import add_distillation, distillation_report
from invertible.reports.lecture import run_lecture
from invertible.reports.markdown import ModelRow, Report, Section

__all__ = [
    "ModelRow",
    "Report",
    "Section",
    "add_distillation",
    "distillation_report",
    "run_lecture",
]
