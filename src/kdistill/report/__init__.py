"""Figures and reports of distilled sets."""

from ._grid import image_grid as image_grid
from ._grid import label_heatmap as label_heatmap
from ._grid import rows_by_class as rows_by_class
from ._html import report_html as report_html
from ._html import write_report as write_report
