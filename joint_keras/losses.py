"""Built-in joint losses: terms that need several submodels' outputs.

Each is a `jk.JointLoss`: pass it in `compile(joint_losses=[...])`.
Classifier outputs may be probabilities (the default, as a softmax layer
gives) or logits (`from_logits=True`).
"""

import keras
from keras import ops

from joint_keras._compile.checks import MAX_SEED
from joint_keras._compile.checks import check_number
from joint_keras.joint_loss import JointLoss


def _log_probs(outputs, temperature, from_logits):
    logits = outputs if from_logits else ops.log(ops.clip(outputs, 1e-7, 1.0))
    return ops.log_softmax(logits / temperature, axis=-1)


def _kl(target_log_probs, log_probs):
    """KL(target || predicted) per sample, from log-probs."""
    target = ops.exp(target_log_probs)
    return ops.sum(target * (target_log_probs - log_probs), axis=-1)


@keras.saving.register_keras_serializable(package="joint_keras")
class MutualKL(JointLoss):
    """Deep mutual learning: each model learns the others' predictions.

    `loss = T^2 * mean over ordered pairs (i, j), i != j, of
    KL(stop_gradient(p_j) || p_i)`, with `p = softmax(logits / T)`. Each
    model is pulled toward the others, and no model is pushed by its own
    target term.

    References:
        Zhang, Xiang, Hospedales, Lu. Deep Mutual Learning. CVPR 2018.

    Args:
        models: List of at least two submodel names.
        temperature: Positive finite float `T`. Defaults to 1.0.
        from_logits: Bool, whether outputs are logits. Defaults to `False`.
        weight: Non-negative finite float, the weight of the term.
            Defaults to 1.0.
        name: Log name. Defaults to `"mutual_kl"`.
        updates: Optional list of the submodels this term updates (see
            `jk.JointLoss`). Defaults to all it reaches.

    Example:

    ```python
    def classifier(hidden):
        return keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(hidden, activation="relu"),
                keras.layers.Dense(3),
            ]
        )

    x, y = np.random.rand(128, 8), np.random.randint(0, 3, size=(128,))
    model = jk.JointModel({"a": classifier(32), "b": classifier(16)})
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        joint_losses=[jk.losses.MutualKL(["a", "b"], from_logits=True)],
    )
    model.fit(x, y, epochs=2, verbose=0)  # logs mutual_kl_loss
    ```
    """

    def __init__(
        self,
        models,
        temperature=1.0,
        from_logits=False,
        weight=1.0,
        name="mutual_kl",
        updates=None,
    ):
        owner = "jk.losses.MutualKL"
        self.models = _check_models(models, "MutualKL")
        self.temperature = _check_temperature(temperature, owner)
        self.from_logits = check_number(from_logits, "from_logits", owner, kind=bool)
        _check_weight(weight, owner)
        super().__init__(self.compute, weight=weight, name=name, updates=updates)

    def compute(self, y_true, y_pred):
        log_p = {
            m: _log_probs(y_pred[m], self.temperature, self.from_logits)
            for m in self.models
        }
        terms = [
            _kl(ops.stop_gradient(log_p[j]), log_p[i])
            for i in self.models
            for j in self.models
            if i != j
        ]
        return self.temperature**2 * ops.mean(ops.stack(terms), axis=0)

    def submodel_names(self):
        return {**super().submodel_names(), "models": self.models}

    def get_config(self):
        return {
            "models": self.models,
            "temperature": self.temperature,
            "from_logits": self.from_logits,
            **self.term_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="joint_keras")
class Distillation(JointLoss):
    """Knowledge distillation: a student learns a teacher's soft predictions.

    `loss = T^2 * mean over the batch of KL(stop_gradient(p_teacher) ||
    p_student)`, with `p = softmax(logits / T)`. The teacher gets no
    gradient from this term: freeze it (`teacher.trainable = False`) when
    it is pretrained, or give it its own `loss` to train both at once.
    The factor `T^2` keeps the gradient scale independent of `T`.

    References:
        Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural
        Network. NIPS 2014 Deep Learning Workshop, arXiv:1503.02531, 2015.

    Args:
        teacher: Name of the teacher submodel.
        student: Name of the student submodel, other than `teacher`.
        temperature: Positive finite float `T`. Defaults to 1.0.
        from_logits: Bool, whether outputs are logits. Defaults to `False`.
        weight: Non-negative finite float, the weight of the term.
            Defaults to 1.0.
        name: Log name. Defaults to `"distillation"`.
        updates: Optional list of the submodels this term updates (see
            `jk.JointLoss`). Defaults to all it reaches.

    Example:

    ```python
    def classifier():
        return keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(3, activation="softmax")]
        )

    teacher, student = classifier(), classifier()  # a trained teacher, in practice
    x, y = np.random.rand(128, 8), np.random.randint(0, 3, size=(128,))
    teacher.trainable = False
    model = jk.JointModel({"teacher": teacher, "student": student})
    model.compile(
        optimizer="adam",
        loss={"student": "sparse_categorical_crossentropy"},
        joint_losses=[
            jk.losses.Distillation("teacher", "student", temperature=4.0)
        ],
    )
    model.fit(x, {"student": y}, epochs=3, verbose=0)
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        temperature=1.0,
        from_logits=False,
        weight=1.0,
        name="distillation",
        updates=None,
    ):
        owner = "jk.losses.Distillation"
        self.teacher = _check_name(teacher, "teacher")
        self.student = _check_name(student, "student")
        _check_distinct("Distillation", teacher=teacher, student=student)
        self.temperature = _check_temperature(temperature, owner)
        self.from_logits = check_number(from_logits, "from_logits", owner, kind=bool)
        _check_weight(weight, owner)
        super().__init__(self.compute, weight=weight, name=name, updates=updates)

    def compute(self, y_true, y_pred):
        teacher = _output(y_pred, self.teacher, "Distillation")
        student = _output(y_pred, self.student, "Distillation")
        target = _log_probs(teacher, self.temperature, self.from_logits)
        log_p = _log_probs(student, self.temperature, self.from_logits)
        return self.temperature**2 * _kl(ops.stop_gradient(target), log_p)

    def submodel_names(self):
        return {
            **super().submodel_names(),
            "teacher": [self.teacher],
            "student": [self.student],
        }

    def get_config(self):
        return {
            "teacher": self.teacher,
            "student": self.student,
            "temperature": self.temperature,
            "from_logits": self.from_logits,
            **self.term_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="joint_keras")
class Consistency(JointLoss):
    """Consistency: two or more models learn to agree with each other.

    `loss = mean over unordered pairs (i, j), i < j, of mean over the
    batch of loss(y_pred[i], y_pred[j])`, with `loss` any Keras loss
    (`"mse"` by default). No output is held fixed: each model is pulled
    toward the others. With a loss that is not symmetric, the earlier
    model of each pair in `models` plays the target.

    References:
        Laine, Aila. Temporal Ensembling for Semi-Supervised Learning.
        ICLR 2017.
        Tarvainen, Valpola. Mean teachers are better role models:
        Weight-averaged consistency targets improve semi-supervised deep
        learning results. NeurIPS 2017.

    Args:
        models: List of at least two submodel names.
        loss: A Keras loss: a string such as `"mse"`, `"mae"` or
            `"huber"`, a loss function, or a `keras.losses.Loss`.
            Defaults to `"mse"`.
        weight: Non-negative finite float, the weight of the term.
            Defaults to 1.0.
        name: Log name. Defaults to `"consistency"`.
        updates: Optional list of the submodels this term updates (see
            `jk.JointLoss`). Defaults to all it reaches.

    Example:

    ```python
    a = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    model = jk.JointModel({"a": a, "b": b})
    model.compile(
        optimizer="adam",
        loss={"a": "mse"},
        joint_losses=[jk.losses.Consistency(["a", "b"], loss="mae", weight=0.1)],
    )
    # Only `a` has targets; `b` learns from agreeing with `a`.
    model.fit(x, {"a": y}, epochs=3, verbose=0)
    ```
    """

    def __init__(
        self, models, loss="mse", weight=1.0, name="consistency", updates=None
    ):
        self.models = _check_models(models, "Consistency")
        self.loss = loss
        self._loss_fn = _get_loss(loss)
        _check_weight(weight, "jk.losses.Consistency")
        super().__init__(self.compute, weight=weight, name=name, updates=updates)

    def compute(self, y_true, y_pred):
        outputs = [_output(y_pred, m, "Consistency") for m in self.models]
        terms = [
            self._loss_fn(outputs[i], outputs[j])
            for i in range(len(outputs))
            for j in range(i + 1, len(outputs))
        ]
        return ops.mean(ops.stack(terms), axis=0)

    def submodel_names(self):
        return {**super().submodel_names(), "models": self.models}

    def get_config(self):
        loss = self.loss
        if not isinstance(loss, str):
            loss = keras.saving.serialize_keras_object(self._loss_fn)
        return {
            "models": self.models,
            "loss": loss,
            **self.term_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="joint_keras")
class InfoNCE(JointLoss):
    """InfoNCE: a two-tower retrieval loss with in-batch negatives.

    With `q = y_pred[query]` and `c = y_pred[candidate]`, both of shape
    `(batch, dim)` and L2-normalized row by row when `normalize=True`,
    `logits = q @ transpose(c) / T` and `loss` is the mean over the rows of
    the softmax cross-entropy with the diagonal as the positive: row `i`'s
    positive is candidate `i`, and the other candidates of the batch are
    its negatives. Both towers get gradients.

    References:
        van den Oord, Li, Vinyals. Representation Learning with
        Contrastive Predictive Coding. arXiv:1807.03748, 2018.
        Yi et al. Sampling-Bias-Corrected Neural Modeling for Large Corpus
        Item Recommendations. RecSys 2019 (in-batch negatives, as in the
        `Retrieval` task of TensorFlow Recommenders).

    Args:
        query: Name of the query (for example user) tower.
        candidate: Name of the candidate (for example item) tower, other
            than `query`.
        temperature: Positive finite float `T`. Defaults to 0.1.
        normalize: Bool, whether to L2-normalize the embeddings, so the logits
            are cosine similarities over `T`. Defaults to `True`.
        weight: Non-negative finite float, the weight of the term.
            Defaults to 1.0.
        name: Log name. Defaults to `"infonce"`.
        updates: Optional list of the submodels this term updates (see
            `jk.JointLoss`). Defaults to all it reaches.

    Example:

    ```python
    def tower(features):
        return keras.Sequential([keras.Input((features,)), keras.layers.Dense(16)])

    user_tower, item_tower = tower(6), tower(10)
    user_features, item_features = np.random.rand(512, 6), np.random.rand(512, 10)
    model = jk.JointModel({"user_tower": user_tower, "item_tower": item_tower})
    model.compile(
        optimizer="adam",
        joint_losses=[jk.losses.InfoNCE("user_tower", "item_tower")],
    )
    # Row i of `user_features` interacted with row i of `item_features`.
    x = {"user_tower": user_features, "item_tower": item_features}
    model.fit(x, None, batch_size=256, epochs=3, verbose=0)
    ```
    """

    def __init__(
        self,
        query,
        candidate,
        temperature=0.1,
        normalize=True,
        weight=1.0,
        name="infonce",
        updates=None,
    ):
        owner = "jk.losses.InfoNCE"
        self.query = _check_name(query, "query")
        self.candidate = _check_name(candidate, "candidate")
        _check_distinct("InfoNCE", query=query, candidate=candidate)
        self.temperature = _check_temperature(temperature, owner)
        self.normalize = check_number(normalize, "normalize", owner, kind=bool)
        _check_weight(weight, owner)
        super().__init__(self.compute, weight=weight, name=name, updates=updates)

    def compute(self, y_true, y_pred):
        q = _embeddings(y_pred, self.query)
        c = _embeddings(y_pred, self.candidate)
        if self.normalize:
            q, c = _l2_normalize(q), _l2_normalize(c)
        logits = ops.matmul(q, ops.transpose(c)) / self.temperature
        return -ops.diagonal(ops.log_softmax(logits, axis=-1))

    def submodel_names(self):
        return {
            **super().submodel_names(),
            "query": [self.query],
            "candidate": [self.candidate],
        }

    def get_config(self):
        return {
            "query": self.query,
            "candidate": self.candidate,
            "temperature": self.temperature,
            "normalize": self.normalize,
            **self.term_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _output(y_pred, name, owner):
    if name not in y_pred:
        raise ValueError(
            f"`{owner}` uses the submodel {name!r}, which has no output. "
            f"Submodels are {list(y_pred)}."
        )
    return y_pred[name]


def _embeddings(y_pred, name):
    outputs = _output(y_pred, name, "InfoNCE")
    if len(outputs.shape) != 2:
        raise ValueError(
            f"`InfoNCE` needs embeddings of shape (batch, dim); submodel "
            f"{name!r} outputs shape {tuple(outputs.shape)}."
        )
    return outputs


def _l2_normalize(x):
    # As `tf.math.l2_normalize`: an all-zero row stays zero, with no NaN.
    squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x / ops.sqrt(ops.maximum(squared_norm, 1e-12))


def _get_loss(loss):
    if not (isinstance(loss, (str, dict)) or callable(loss)):
        raise TypeError(
            "`loss` must be a Keras loss: a string, a loss function or a "
            f"`keras.losses.Loss`. Received: loss={loss!r} of type "
            f"{type(loss).__name__}"
        )
    try:
        return keras.losses.get(loss)
    except ValueError as error:
        raise ValueError(
            f"`loss` names no Keras loss. Received: loss={loss!r}"
        ) from error


def _check_name(name, argument):
    if not isinstance(name, str):
        raise TypeError(
            f"`{argument}` must be a submodel name (a string). Received: "
            f"{argument}={name!r} of type {type(name).__name__}"
        )
    return name


def _check_distinct(owner, **names):
    (first, a), (second, b) = names.items()
    if a == b:
        raise ValueError(
            f"`{owner}` needs two different submodels as `{first}` and "
            f"`{second}`. Received: {first}={a!r}, {second}={b!r}"
        )


def _check_models(models, owner):
    if isinstance(models, str) or len(models) < 2:
        raise ValueError(
            f"`{owner}` needs a list of at least two submodel names. "
            f"Received: models={models!r}"
        )
    return list(models)


def _check_temperature(temperature, owner):
    return check_number(
        temperature, "temperature", owner, minimum=0, exclusive_minimum=True
    )


def _check_weight(weight, owner):
    """Checks `weight` as `compile()` checks joint-loss weights, at
    construction; the value is kept as given."""
    check_number(weight, "weight", owner, minimum=0)


@keras.saving.register_keras_serializable(package="joint_keras")
class GradientPenalty(JointLoss):
    """Gradient penalty on a critic between real and generated samples.

    With `x_hat = real + alpha * (fake - real)`, `alpha` drawn per sample,
    `loss = mean over the batch of (|grad_x critic(x_hat)| - 1)^2`: the
    critic is pushed to be 1-Lipschitz, as in WGAN-GP. The gradient with
    respect to the input is taken on every backend (`context.input_gradient`)
    and is itself differentiated for the critic's update.

    References:
        Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville. Improved Training
        of Wasserstein GANs. NeurIPS 2017.

    Args:
        critic: Name of the critic submodel.
        fake: Name of the submodel whose outputs are the generated samples.
        real: Where the real samples come from: `jk.INPUT` (the critic's
            entry of the input `x`, the default) or a submodel name.
        alpha: `"uniform"` (in [0, 1), as in the paper, the default) or
            `"normal"` (as in the keras-io WGAN-GP example).
        seed: Optional int seed of `alpha`'s draws, in [0, 2**31 - 1].
        weight: Non-negative finite float, the weight of the term.
            Defaults to 10.0, as in the paper.
        name: Log name. Defaults to `"gradient_penalty"`.
        updates: Optional list of the submodels this term updates;
            typically `[critic]`.

    Example:

    ```python
    def critic_loss(y_true, y_pred):
        fake, real = keras.ops.split(y_pred["critic"], 2)  # Concat's two halves
        return keras.ops.mean(fake) - keras.ops.mean(real)


    def generator_loss(y_true, y_pred):
        fake, _ = keras.ops.split(y_pred["critic"], 2)
        return -keras.ops.mean(fake)


    gen = keras.Sequential([keras.Input((128,)), keras.layers.Dense(2)])
    critic = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(16, "relu"), keras.layers.Dense(1)]
    )
    real_images = np.random.normal(size=(128, 2))  # 2-D points here
    wgan = jk.JointModel(
        {"gen": gen, "critic": critic},
        inputs={"gen": jk.Noise((128,)), "critic": jk.Concat("gen", jk.INPUT)},
    )
    wgan.compile(
        optimizer={"gen": "adam", "critic": "adam"},
        joint_losses=[
            jk.JointLoss(critic_loss, updates=["critic"]),
            jk.losses.GradientPenalty("critic", fake="gen", updates=["critic"]),
            jk.JointLoss(generator_loss, updates=["gen"]),
        ],
        alternate=["critic"] * 5 + ["gen"],
    )
    wgan.fit(real_images, None, batch_size=64, epochs=1, verbose=0)
    ```
    """

    def __init__(
        self,
        critic,
        fake,
        real=None,
        alpha="uniform",
        seed=None,
        weight=10.0,
        name="gradient_penalty",
        updates=None,
    ):
        from joint_keras._graph.graph import INPUT

        self.critic = _check_name(critic, "critic")
        self.fake = _check_name(fake, "fake")
        self.real = INPUT if real is None else real
        if alpha not in ("uniform", "normal"):
            raise ValueError(
                f"`alpha` must be 'uniform' or 'normal'. Received: alpha={alpha!r}"
            )
        self.alpha = alpha
        owner = "jk.losses.GradientPenalty"
        self.seed = check_number(
            seed, "seed", owner, kind=int, minimum=0, maximum=MAX_SEED, optional=True
        )
        _check_weight(weight, owner)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        super().__init__(
            self.compute, weight=weight, name=name, updates=updates, with_context=True
        )

    def compute(self, y_true, y_pred, context):
        fake = _output(y_pred, self.fake, "GradientPenalty")
        if isinstance(self.real, str):
            real = y_pred[self.real]
        elif self.critic in context.inputs:
            real = context.inputs[self.critic]
        else:
            raise ValueError(
                "`jk.losses.GradientPenalty` takes the real samples from the "
                f"critic {self.critic!r}'s entry of the input `x` (`real=jk.INPUT`), "
                f"but `x` does not feed {self.critic!r} (its `inputs=` source "
                "has no `jk.INPUT`). Feed it, e.g. `inputs={"
                f"{self.critic!r}: jk.Concat({self.fake!r}, jk.INPUT)}}`, or pass "
                "`real=` the name of the submodel that gives the real samples."
            )
        shape = (ops.shape(fake)[0],) + (1,) * (len(fake.shape) - 1)
        draw = keras.random.uniform if self.alpha == "uniform" else keras.random.normal
        alpha = draw(shape, seed=self.seed_generator)
        mixed = real + alpha * (fake - real)
        critic = context.submodels[self.critic]
        grads = context.input_gradient(lambda t: critic(t, training=True), mixed)
        axes = tuple(range(1, len(grads.shape)))
        norm = ops.sqrt(ops.sum(ops.square(grads), axis=axes))
        return ops.square(norm - 1.0)

    def submodel_names(self):
        names = [self.critic, self.fake]
        if isinstance(self.real, str):
            names.append(self.real)
        return {**super().submodel_names(), "critic/fake/real": names}

    def get_config(self):
        return {
            "critic": self.critic,
            "fake": self.fake,
            "real": self.real if isinstance(self.real, str) else None,
            "alpha": self.alpha,
            "seed": self.seed,
            **self.term_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
