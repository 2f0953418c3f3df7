"""joint_keras: train several Keras models jointly, with `fit()`."""

from joint_keras import callbacks
from joint_keras import losses
from joint_keras import weighting
from joint_keras._graph.graph import INPUT
from joint_keras._graph.graph import Concat
from joint_keras._graph.graph import Noise
from joint_keras._graph.graph import Output
from joint_keras.joint_loss import JointLoss
from joint_keras.joint_model import JointModel
from joint_keras.submodel_optimizer import SubmodelOptimizer

__version__ = "0.2.0"

__all__ = [
    "INPUT",
    "Concat",
    "JointLoss",
    "JointModel",
    "Noise",
    "Output",
    "SubmodelOptimizer",
    "callbacks",
    "losses",
    "weighting",
]
