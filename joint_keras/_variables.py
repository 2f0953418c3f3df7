"""Which submodel uses which variable and layer, worked out in one place."""

import keras


class VariableIndex:
    """The submodels' use of the joint model's trainable variables.

    Positions refer to `trainable_variables` as given (the joint model's
    deduplicated list, the order the optimizer and the steps use). Variables
    of no submodel (a weighting strategy's) have no user.

    Args:
        submodels: Dict name -> `keras.Model`, in submodel order.
        trainable_variables: The joint model's trainable variables.
    """

    def __init__(self, submodels, trainable_variables):
        self.variables = list(trainable_variables)
        self.position = position = {id(v): i for i, v in enumerate(self.variables)}
        self.users_of = [[] for _ in self.variables]
        self.positions_of = {}
        for name, model in submodels.items():
            used = {id(v) for v in model.trainable_variables}
            positions = sorted(position[key] for key in used if key in position)
            self.positions_of[name] = positions
            for i in positions:
                self.users_of[i].append(name)
        self.shared = [i for i, users in enumerate(self.users_of) if len(users) > 1]

    @classmethod
    def of(cls, submodels, trainable_variables, previous=None):
        """`previous` if built on the same variables, else a new index."""
        ids = [id(v) for v in trainable_variables]
        if previous is not None and [id(v) for v in previous.variables] == ids:
            return previous
        return cls(submodels, trainable_variables)

    def positions(self, names):
        """Sorted positions of the variables used by any of `names`."""
        return sorted({i for name in names for i in self.positions_of[name]})

    def first_user(self, variable, among):
        """The first of the submodel names `among` (in submodel order) that
        uses `variable`, or `None`."""
        i = self.position.get(id(variable))
        if i is None:
            return None
        return next((u for u in self.users_of[i] if u in among), None)

    def uncovered(self, names):
        """Submodels with variables that none of `names` uses."""
        covered = set(self.positions(names))
        return [
            name
            for name, positions in self.positions_of.items()
            if any(i not in covered for i in positions)
        ]

    def only_used_by(self, names):
        """Positions of the variables that only submodels in `names` use."""
        names = set(names)
        return [
            i
            for i, users in enumerate(self.users_of)
            if users and set(users) <= names
        ]


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
