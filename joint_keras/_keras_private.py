"""The only module that imports private Keras machinery.

`JointModel` reuses Keras's own per-output loss and metric containers, so that
a submodel's `loss` and `metrics` behave exactly as they would in
`keras.Model.compile()` (string resolution such as `"accuracy"` and `"ce"`,
nested outputs, sample weights, distribution scaling), and its `MetricsList`
type, through which callbacks in `mode="auto"` (`EarlyStopping`,
`ModelCheckpoint`, ...) find whether a logged metric goes up or down, and
its prediction masks (`set_keras_mask`), through which Keras losses and
metrics skip unlabelled rows and average over the labelled ones. Keras
does not export
them publicly; keeping every `keras.src` import here means a Keras release
that moves them breaks one file.
"""

from keras.src.backend.common.masking import set_keras_mask
from keras.src.losses.loss import scale_loss_for_distribution
from keras.src.losses.loss import unscale_loss_for_distribution
from keras.src.trainers.compile_utils import CompileLoss
from keras.src.trainers.compile_utils import CompileMetrics
from keras.src.trainers.compile_utils import MetricsList

__all__ = [
    "CompileLoss",
    "CompileMetrics",
    "MetricsList",
    "scale_loss_for_distribution",
    "set_keras_mask",
    "unscale_loss_for_distribution",
]
