"""Kernels on NHWC images, all reachable from spec strings (``from_spec("rbf:gamma=0.01")``).

Every kernel is a pure JAX function ``k(x1, x2) -> (n1, n2)``, differentiable in
both arguments and jit-compatible; kernels with an explicit feature map expose
it as ``Kernel.features`` so that ridge regression can run in the primal.
"""

from ._spec import Kernel as Kernel
from ._spec import KernelFamily as KernelFamily
from ._spec import Param as Param
from ._spec import families as families
from ._spec import from_spec as from_spec
from ._spec import parse_spec as parse_spec
from ._spec import register as register
from ._classical import flatten as flatten
from ._classical import linear as linear
from ._classical import rbf as rbf
from ._classical import sq_distances as sq_distances
from ._feature_maps import WEIGHTS_DRAW as WEIGHTS_DRAW
from ._feature_maps import fcnn as fcnn
from ._feature_maps import rff as rff
from ._fc import fc_ntk as fc_ntk
from ._fc import fc_nngp as fc_nngp
from ._convnet import convnet_ntk as convnet_ntk
from ._convnet import convnet_nngp as convnet_nngp
from ._random_features import rf_convnet as rf_convnet
from ._random_features import rf_fc as rf_fc
from ._invertible import cnn as cnn
from ._invertible import deep_linear as deep_linear
from ._invertible import deep_linear_matrix as deep_linear_matrix
from ._invertible import inn as inn
