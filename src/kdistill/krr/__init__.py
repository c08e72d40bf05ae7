"""Kernel ridge regression: dual (any kernel) and primal (explicit feature maps), and ridge selection.

Convention (KIP, arXiv:2011.00050): lam = reg * tr(K) / m, with the same
relative ``reg`` in the primal (tr G = tr K).
"""

from ._dual import DualModel as DualModel
from ._dual import Solution as Solution
from ._dual import absolute_reg as absolute_reg
from ._dual import accuracy as accuracy
from ._dual import check_finite as check_finite
from ._dual import MAX_REG as MAX_REG
from ._dual import fit as fit
from ._dual import kernel_matrix as kernel_matrix
from ._dual import predict as predict
from ._dual import solve as solve
from ._primal import GramStats as GramStats
from ._primal import PrimalModel as PrimalModel
from ._primal import accumulate as accumulate
from ._primal import fit_primal as fit_primal
from ._primal import gram_stats as gram_stats
from ._primal import predict_primal as predict_primal
from ._primal import solve_primal as solve_primal
from ._select import DEFAULT_GRID as DEFAULT_GRID
from ._select import DEFAULT_VAL_SIZE as DEFAULT_VAL_SIZE
from ._select import effective_val_size as effective_val_size
from ._select import RegSelection as RegSelection
from ._select import fit_primal_selected as fit_primal_selected
from ._select import held_out_indices as held_out_indices
from ._select import select_dual as select_dual
from ._select import select_primal as select_primal
from ._select import select_support as select_support
from ._select import split_indices as split_indices
