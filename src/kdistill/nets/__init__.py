"""Finite-network building blocks."""

from ._conv import FORMULATIONS as FORMULATIONS
from ._conv import conv3x3 as conv3x3
