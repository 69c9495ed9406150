r"""Multiscale methods behind one small interface (see :mod:`msfem.methods.base`).

Built in: the MsFEM variants (:mod:`msfem.methods.msfem`) -- ``standard``, ``linear``,
``oscillatory``, ``oversampling``, ``petrov-galerkin`` (and ``msfem`` with the variant as
a parameter), LOD (:mod:`msfem.methods.lod`) -- ``lod`` --, GMsFEM
(:mod:`msfem.methods.gmsfem`) -- ``gmsfem`` -- and MsFEM à la Crouzeix--Raviart
(:mod:`msfem.methods.crouzeix_raviart`) -- ``crouzeix-raviart``. A new method is a subclass
of :class:`Method` registered with :func:`register`; ``docs/architecture.md`` walks through
one.
"""

# the MsFEM variants first: the registry (``msfem methods``, messages) lists them first
from msfem.methods import msfem as _msfem  # noqa: F401  (registers the MsFEM variants)

# isort: split
from msfem.methods import crouzeix_raviart as _crouzeix_raviart  # noqa: F401  (registers it)
from msfem.methods import fe_hmm as _fe_hmm  # noqa: F401  (registers FE-HMM)
from msfem.methods import gmsfem as _gmsfem  # noqa: F401  (registers GMsFEM)
from msfem.methods import lod as _lod  # noqa: F401  (registers LOD)
from msfem.methods.base import (
    ElementData,
    Entry,
    Method,
    Parameters,
    available,
    create,
    entry,
    parameter_names,
    register,
    unregister,
)
from msfem.methods.crouzeix_raviart import CrouzeixRaviart, CrouzeixRaviartParameters
from msfem.methods.lod import LOD, LODParameters
from msfem.methods.msfem import MsFEM, MsFEMParameters

__all__ = ["LOD", "CrouzeixRaviart", "CrouzeixRaviartParameters", "ElementData", "Entry",
           "LODParameters", "Method", "MsFEM", "MsFEMParameters", "Parameters", "available",
           "create", "entry", "parameter_names", "register", "unregister"]
