"""A training or test step, written once in `keras.ops`: the step itself
(`step`), the losses of a step (`task_losses`, `targets`), which variables
the step may move (`variables`, `updates`, `gates`) and the combination of
per-task gradients (`combine`). The backend-specific part is in
`joint_keras/backend/`.
"""
