"""What a spec expands to: the models to train (or reuse) and the cells to prune.

A **model** is one point of the grid (group, density, width, step budget, training seed), plus one
untrained twin per model in the controls' scope when ``controls.random_init`` is on. A **cell** is
(model, task, pruner, objective, control, pruning seed); a model's cells exist for the tasks it
solves (the verdict of ``circuitlab prune``: the 95% Wilson interval of its full-model test accuracy
against ``prune.min_accuracy``; borderline tasks are pruned and flagged), and a random-init cell for
each task its trained twin solves. Cell and model ids are readable and stable: the same spec gives the same ids, so
a rerun finds the finished cells by file name.
"""

from __future__ import annotations

import attrs

from ..config import ModelConfig, PruneConfig, TrainConfig, config_hash
from .spec import BenchSpec, ModelGroup

#: Control names (the ``control`` of a cell). ``ablation-NAME`` cells use another ablation.
CONTROLS = ("none", "nonsense", "freeze_norm", "random_init")


@attrs.frozen(kw_only=True)
class ModelSpec:
    model_id: str
    group: str
    kind: str  # "trained", or "init" for the random-init control
    train: TrainConfig
    shape: ModelConfig
    twin: str | None = None  # an init model's trained twin
    controls: bool = False  # this model's solved tasks get control cells

    @property
    def width(self) -> int:
        return self.shape.d_model

    @property
    def config_hash(self) -> str:
        return config_hash(self.train, self.shape)

    def describe(self) -> dict:
        t = self.train
        return {"model_id": self.model_id, "group": self.group, "kind": self.kind, "preset": t.preset,
                "sparsity": t.sparsity, "density": t.density, "width": self.width, "train_steps": t.steps,
                "train_seed": t.seed, "config_hash": self.config_hash, "twin": self.twin}


@attrs.frozen(kw_only=True)
class Cell:
    model_id: str
    task: str  # suite:task
    pruner: str
    objective: str
    control: str = "none"  # one of CONTROLS, or "ablation-NAME"
    seed: int = 0
    key: str = ""  # hash of its PruneConfig, model config and plugin versions: a changed setting is a new cell

    @property
    def cell_id(self) -> str:
        task, pruner, objective = (x.replace(":", "-") for x in (self.task, self.pruner, self.objective))
        return f"{self.model_id}.{task}.{pruner}.{objective}.{self.control}.s{self.seed}.{self.key}"

    @property
    def method_label(self) -> str:
        """The method name of this cell's circuit in the model's activation store."""
        label = self.pruner if self.objective == "binary_ce" else f"{self.pruner}+{self.objective}"
        if self.control != "none":
            label += f".{self.control}"
        return f"{label}.s{self.seed}"


def _shape(group: ModelGroup, width: int | None) -> ModelConfig:
    base = TrainConfig(preset=group.preset).model_config()
    if width is None:
        return base
    return attrs.evolve(base, d_model=width, d_mlp=4 * width, n_head=width // base.d_head)


def model_specs(spec: BenchSpec) -> list[ModelSpec]:
    """Every trained model of the grid, then the untrained twins of the random-init control."""
    scope = spec.controls.groups
    models: list[ModelSpec] = []
    for g in spec.models:
        for density in g.densities:
            for width in g.widths:
                for steps in g.steps:
                    for i, seed in enumerate(g.seeds):
                        train = TrainConfig.for_preset(g.preset, sparsity=g.sparsity, density=density, steps=steps,
                                                       seed=seed, lr=g.lr, corpus=spec.corpus)
                        shape = _shape(g, width)
                        mid = f"{g.group}-d{train.density:g}-w{shape.d_model}-n{train.steps}-s{seed}"
                        in_scope = (scope is None or g.group in scope) and (i == 0 or not spec.controls.first_seed_only)
                        models.append(ModelSpec(model_id=mid, group=g.group, kind="trained", train=train, shape=shape,
                                                controls=in_scope))
    if spec.controls.random_init:
        twins = [ModelSpec(model_id=f"{m.model_id}-init", group=m.group, kind="init", train=m.train, shape=m.shape,
                           twin=m.model_id) for m in models if m.controls]
        models += twins
    return models


def prune_config(spec: BenchSpec, cell: Cell) -> PruneConfig:
    """The PruneConfig of a cell: the grid's settings, changed by the cell's control."""
    p = spec.prune
    config = PruneConfig(pruner=cell.pruner, objective=cell.objective, tasks=cell.task, target_loss=p.target_loss,
                         ablation=p.ablation, min_accuracy=p.min_accuracy, seed=cell.seed, steps=p.steps, lr=p.lr,
                         penalty_coef=p.penalty_coef, n_train=p.n_train, n_test=p.n_test, threads=spec.threads,
                         batch_pairs=p.batch_pairs, random_draws=p.random_draws, mine_from=p.mine_from)
    if cell.control == "nonsense":
        return attrs.evolve(config, nonsense=True)
    if cell.control == "freeze_norm":
        return attrs.evolve(config, freeze_norm=True)
    if cell.control == "random_init":  # an untrained model solves nothing: prune it anyway, as the control
        return attrs.evolve(config, min_accuracy=0.0)
    if cell.control.startswith("ablation-"):
        return attrs.evolve(config, ablation=cell.control.removeprefix("ablation-"))
    return config


def cells_for(spec: BenchSpec, model: ModelSpec, solved: list[str], twin_solved: list[str] | None = None) -> list[Cell]:
    """The cells of one model, given the tasks it solves (for an init model: the tasks its twin solves)."""
    p, c = spec.prune, spec.controls
    first = {"pruner": p.pruners[0], "objective": p.objectives[0], "seed": p.seeds[0]}
    if model.kind == "init":
        cells = [Cell(model_id=model.model_id, task=t, control="random_init", pruner=first["pruner"],
                      objective=first["objective"], seed=s) for t in (twin_solved or []) for s in p.seeds[:c.seeds]]
    else:
        cells = [Cell(model_id=model.model_id, task=t, pruner=pr, objective=ob, seed=s)
                 for t in solved for pr in p.pruners for ob in p.objectives for s in p.seeds]
        if model.controls:
            controls = (["nonsense"] if c.nonsense else []) + (["freeze_norm"] if c.freeze_norm else [])
            controls += [f"ablation-{a}" for a in c.ablations if a != p.ablation]
            cells += [Cell(model_id=model.model_id, task=t, control=ctl, pruner=first["pruner"],
                           objective=first["objective"], seed=s)
                      for t in solved for ctl in controls for s in p.seeds[:c.seeds]]
    return [attrs.evolve(cell, key=config_hash(prune_config(spec, cell), model.config_hash, model.kind,
                                               _plugin_versions(model, cell))[:8])
            for cell in cells]


def _plugin_versions(model: ModelSpec, cell: Cell) -> list[str]:
    """The versions of the plugins a cell's result depends on: a plugin upgrade makes it a new cell."""
    from .. import plugins

    used = [("sparsity", model.train.sparsity), ("pruner", cell.pruner), ("objective", cell.objective)]
    return [f"{kind}:{name}={plugins.get(kind, name).version}" for kind, name in used]


def tasks_key(spec: BenchSpec) -> str:
    """What a model's task verdicts depend on: a model file with another key is evaluated again."""
    return config_hash(spec.tasks, spec.prune.n_train, spec.prune.n_test, spec.prune.min_accuracy, "wilson")[:12]
