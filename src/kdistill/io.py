"""Reading and writing distilled sets (``.npz`` + JSON sidecar)."""

from ._io import DistilledSet as DistilledSet
from ._io import load as load
from ._io import save as save
from ._io import sidecar_path as sidecar_path
