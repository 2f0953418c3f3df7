"""Which submodel uses which variable and layer, worked out in one place."""

import keras


class VariableIndex:
    """The submodels' use of the joint model's trainable variables.

    Positions refer to `trainable_variables` as given (the joint model's
    deduplicated list, the order the optimizer and the steps use). Two
    relations per variable:

    - its owners: the submodels that hold it (their layers use it). Routing
      (`updates=`) and per-submodel optimizers go by owners.
    - its dependents: the submodels whose output depends on it, that is its
      owners and every submodel fed, through the submodel graph, by one of
      them. Which losses can reach a variable goes by dependents.

    Variables of no submodel (a weighting strategy's) have neither.

    Args:
        submodels: Dict name -> `keras.Model`, in submodel order.
        trainable_variables: The joint model's trainable variables.
        ancestors: Optional dict name -> the set of submodels whose outputs
            flow into it (the submodel graph); none by default.
    """

    def __init__(self, submodels, trainable_variables, ancestors=None):
        ancestors = ancestors or {}
        self.variables = list(trainable_variables)
        self.position = {id(v): i for i, v in enumerate(self.variables)}
        self.owners_of = [[] for _ in self.variables]
        self.positions_of = {}
        for name, model in submodels.items():
            used = {id(v) for v in model.trainable_variables}
            positions = sorted(self.position[k] for k in used if k in self.position)
            self.positions_of[name] = positions
            for i in positions:
                self.owners_of[i].append(name)
        self.dependents_of = [
            [
                name
                for name in submodels
                if name in owners or set(owners) & set(ancestors.get(name, ()))
            ]
            for owners in self.owners_of
        ]
        self.shared = [i for i, d in enumerate(self.dependents_of) if len(d) > 1]
        # A weighting strategy's own variables.
        self.unowned = [i for i, owners in enumerate(self.owners_of) if not owners]

    @classmethod
    def of(cls, submodels, trainable_variables, ancestors=None, previous=None):
        """`previous` if built on the same variables, else a new index."""
        ids = [id(v) for v in trainable_variables]
        if previous is not None and [id(v) for v in previous.variables] == ids:
            return previous
        return cls(submodels, trainable_variables, ancestors)

    def positions(self, names):
        """Sorted positions of the variables owned by any of `names`."""
        return sorted({i for name in names for i in self.positions_of[name]})

    def reached_by(self, names):
        """Sorted positions of the variables the outputs of `names` depend on."""
        names = set(names)
        return [i for i, d in enumerate(self.dependents_of) if names & set(d)]

    def first_owner(self, variable, among):
        """The first of the submodel names `among` (in submodel order) that
        owns `variable`, or `None`."""
        i = self.position.get(id(variable))
        if i is None:
            return None
        return next((u for u in self.owners_of[i] if u in among), None)

    def uncovered(self, names):
        """Submodels with variables that none of `names` owns."""
        covered = set(self.positions(names))
        return [
            name
            for name, positions in self.positions_of.items()
            if any(i not in covered for i in positions)
        ]

    def only_reached_by(self, names):
        """Positions of the variables only the outputs of `names` depend on."""
        names = set(names)
        return [i for i, d in enumerate(self.dependents_of) if d and set(d) <= names]


def step_state(model):
    """Every variable a step of `model` reads or writes (what a JAX step
    threads): the model's, its optimizer's and its metrics'."""
    optimizer = getattr(model, "optimizer", None)
    optimizer_variables = list(optimizer.variables) if optimizer else []
    return (
        model.trainable_variables
        + model.non_trainable_variables
        + optimizer_variables
        + model.metrics_variables
    )


def walk_layers(model):
    """Every layer inside `model`, depth first, each once (nested models
    included, `model` itself not)."""
    seen, order = set(), []

    def visit(layer):
        for sub in getattr(layer, "layers", []):
            if id(sub) not in seen:
                seen.add(id(sub))
                order.append(sub)
                visit(sub)

    visit(model)
    return order


def find_layer(models, name):
    """The first layer named `name` inside any of `models`, or `None`."""
    for model in models:
        for layer in walk_layers(model):
            if layer.name == name:
                return layer
    return None


def shared_layers(submodels):
    """`{layer: [submodel names]}` for the layers several submodels use.

    Input layers are left out: submodels built on one `keras.Input` share
    it, but it holds no state.
    """
    owners = {}
    for name, model in submodels.items():
        for layer in walk_layers(model):
            if not isinstance(layer, keras.layers.InputLayer):
                owners.setdefault(layer, []).append(name)
    return {layer: names for layer, names in owners.items() if len(names) > 1}
