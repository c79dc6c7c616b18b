"""`report`: the static trace explorer."""
from __future__ import annotations

from dataclasses import dataclass

from cliffdata.config.validate import check


@dataclass(frozen=True)
class ReportConfig:
    """`report`: the static trace explorer under reports/ (cliffdata/publish/report/)."""
    level: float = 0.95                # coverage of the Wilson band around each position's potential
    title: str = "cliffdata report"
    plot_traces: tuple[str, ...] = ()  # potential curves for `dvc plots`; () = the first num_plot_traces with a cliff
    num_plot_traces: int = 4           # how many traces `plot_traces: []` picks

    def __post_init__(self):
        check(0 < self.level < 1, f"report.level must be in (0, 1), got {self.level}")
        check(self.num_plot_traces >= 0, f"report.num_plot_traces must be >= 0, got {self.num_plot_traces}")
