"""Loss-weighting and gradient-combining strategies for `JointModel`.

Pass one to `JointModel.compile(weighting=...)`, as an object or by name.
Loss-level strategies change the weights of the summed objective; gradient
-level ones combine the per-task gradients on the variables the submodels
share.
"""

from joint_keras.weighting.base import Coefficients
from joint_keras.weighting.base import Weighting
from joint_keras.weighting.cagrad import CAGrad
from joint_keras.weighting.dwa import DWA
from joint_keras.weighting.fixed import Fixed
from joint_keras.weighting.gradnorm import GradNorm
from joint_keras.weighting.mgda import MGDA
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
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "mgda": MGDA,
    "upgrad": UPGrad,
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
    "CAGrad",
    "Coefficients",
    "DWA",
    "MGDA",
    "RLW",
    "Fixed",
    "GradNorm",
    "PCGrad",
    "UPGrad",
    "Uncertainty",
    "Weighting",
    "get",
]
