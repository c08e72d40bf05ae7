"""Finite networks: the layers, the models, their training (optax) and the augmentations.

Everything in kdistill that trains or runs a finite network goes through this package: finite-network
evaluation (:mod:`kdistill.evaluate`), DC's gradient matching, FRePo's model pool (:class:`ModelPool`) and the random-feature kernels (which draw
NTK-parameterised random networks from :mod:`kdistill.nets.ntk`).
"""

from ._augment import AUGMENTS as AUGMENTS
from ._augment import DSA_FAMILIES as DSA_FAMILIES
from ._augment import FREPO_FAMILIES as FREPO_FAMILIES
from ._augment import augment_batch as augment_batch
from ._augment import crop_flip as crop_flip
from ._augment import dc_augment as dc_augment
from ._augment import dsa_augment as dsa_augment
from ._augment import dsa_strategy as dsa_strategy
from ._augment import frepo_augment as frepo_augment
from ._conv import FORMULATIONS as FORMULATIONS
from ._conv import conv3x3 as conv3x3
from ._conv import default_formulation as default_formulation
from ._models import MODELS as MODELS
from ._models import NORMS as NORMS
from ._models import POOLINGS as POOLINGS
from ._models import AlexNet as AlexNet
from ._models import ConvNet as ConvNet
from ._models import MLP as MLP
from ._models import ResNet18 as ResNet18
from ._models import VGG11 as VGG11
from ._models import make_model as make_model
from ._pool import ModelPool as ModelPool
from ._train import LOSSES as LOSSES
from ._train import OPTIMIZERS as OPTIMIZERS
from ._train import epoch_plan as epoch_plan
from ._train import init_optimizer as init_optimizer
from ._train import init_params as init_params
from ._train import loss_value as loss_value
from ._train import max_learning_rate as max_learning_rate
from ._train import momentum_step as momentum_step
from ._train import ntk_top_eigenvalue as ntk_top_eigenvalue
from ._train import optimizer as optimizer
from ._train import predict as predict
from ._train import run_epochs as run_epochs
from ._train import seed_key as seed_key
from ._train import train_step as train_step
