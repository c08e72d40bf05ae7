"""Figures and reports of distilled sets, and the comparison of many runs (``kdistill compare``)."""

from ._grid import image_grid as image_grid
from ._grid import label_heatmap as label_heatmap
from ._grid import rows_by_class as rows_by_class
from ._html import report_html as report_html
from ._html import write_report as write_report
from ._compare import RunGroup as RunGroup
from ._compare import RunRecord as RunRecord
from ._compare import Stat as Stat
from ._compare import check_compare_targets as check_compare_targets
from ._compare import collect_runs as collect_runs
from ._compare import compare_html as compare_html
from ._compare import compare_json as compare_json
from ._compare import group_runs as group_runs
from ._compare import groups_table as groups_table
from ._compare import runs_table as runs_table
from ._compare import write_compare_html as write_compare_html
from ._compare import write_compare_json as write_compare_json
