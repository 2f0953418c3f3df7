"""Loss-weighting and gradient-combining strategies for `JointModel`.

Pass one to `JointModel.compile(weighting=...)`, as an object or by name.
Loss-level strategies change the weights of the summed objective; gradient
-level ones combine the per-task gradients on the variables the submodels
share.
"""

from joint_keras.weighting.aligned_mtl import AlignedMTL
from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting
from joint_keras.weighting.cagrad import CAGrad
from joint_keras.weighting.config import ConFIG
from joint_keras.weighting.dbmtl import DBMTL
from joint_keras.weighting.dualproj import DualProj
from joint_keras.weighting.dwa import DWA
from joint_keras.weighting.fairgrad import FairGrad
from joint_keras.weighting.famo import FAMO
from joint_keras.weighting.fixed import Fixed
from joint_keras.weighting.graddrop import GradDrop
from joint_keras.weighting.gradnorm import GradNorm
from joint_keras.weighting.gradvac import GradVac
from joint_keras.weighting.imtlg import IMTLG
from joint_keras.weighting.mgda import MGDA
from joint_keras.weighting.nash_mtl import NashMTL
from joint_keras.weighting.pcgrad import PCGrad
from joint_keras.weighting.rlw import RLW
from joint_keras.weighting.uncertainty import Uncertainty
from joint_keras.weighting.upgrad import UPGrad

_BY_NAME = {
    "fixed": Fixed,
    "uncertainty": Uncertainty,
    "dwa": DWA,
    "rlw": RLW,
    "gradnorm": GradNorm,
    "graddrop": GradDrop,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "mgda": MGDA,
    "upgrad": UPGrad,
    "dualproj": DualProj,
    "imtlg": IMTLG,
    "aligned_mtl": AlignedMTL,
    "nash_mtl": NashMTL,
    "config": ConFIG,
    "gradvac": GradVac,
    "fairgrad": FairGrad,
    "famo": FAMO,
    "dbmtl": DBMTL,
}


def get(identifier):
    """Returns the `Weighting` for `identifier`.

    Args:
        identifier: `None` (fixed weights), a name (`"fixed"`,
            `"uncertainty"`, `"dwa"`, `"rlw"`, ...; a new instance with
            default settings), or a `Weighting` instance (returned as is,
            as `keras.optimizers.get` does).

    Returns:
        A `Weighting` instance.
    """
    if identifier is None:
        return Fixed()
    if isinstance(identifier, Weighting):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(
        "`weighting` must be None, a `jk.weighting.Weighting` or one of "
        f"{sorted(_BY_NAME)}. Received: weighting={identifier!r}"
    )


__all__ = [
    "AlignedMTL",
    "CAGrad",
    "Coefficients",
    "ConFIG",
    "DBMTL",
    "DWA",
    "DualProj",
    "FAMO",
    "FairGrad",
    "Fixed",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "IMTLG",
    "MGDA",
    "NashMTL",
    "PCGrad",
    "RLW",
    "UPGrad",
    "Uncertainty",
    "Weighting",
    "get",
]
