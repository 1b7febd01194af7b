"""Search space files: the bundled ones load, bad ones fail at the door with one line naming
the file and the key, and conditional parameters are sampled only where they apply."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from archsearch.config import TrialConfig
from archsearch.gates import get_gate_info
from archsearch.space import SpaceError, load_spec

SPACES = sorted((Path(__file__).parent.parent / "search_spaces").glob("*.yaml"))

GOOD: dict[str, Any] = {
    "name": "tiny",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "data": {"name": "synthetic", "options": {"n_samples": 64}},
    "trials": 4,
    "train": {"epochs": 1, "finetune_epochs": 0, "lr": 0.01},
    "space": {
        "gate": ["arm", "gumbel_softmax", "hard_concrete"],
        "granularity": ["weight", "neuron"],
        "penalty.lambda": {"loguniform": [0.001, 1.0]},
        "arm.k": {"uniform": [3.0, 10.0]},
        "gumbel_softmax.tau_min": [0.1, 0.2],
    },
}


def write(tmp_path: Path, raw: Any, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def changed(**changes: Any) -> dict[str, Any]:
    """GOOD with dotted keys replaced (``space.gate``) or removed (value ``...``)."""
    raw = copy.deepcopy(GOOD)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_bundled_spaces_load(path: Path) -> None:
    spec = load_spec(path)
    assert spec.trials >= 1 and spec.concurrency >= 1
    cost = "latency" if path.stem.endswith("_latency") else "flops"
    assert spec.objectives == {"val_accuracy": "max", cost: "min"}
    assert spec.base.latency_runtime == "onnxruntime"  # every bundled search times its trials
    names = {p.name for p in spec.params}
    assert {"gate", "granularity", "penalty.lambda"} <= names


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_bundled_spaces_reach_the_cheap_end_and_keep_collapses_off_the_front(path: Path) -> None:
    """With each gate method's factor on lambda (docs/gates.md), lambda 1 still keeps 14-43% of
    LeNet-5-Caffe's channel FLOPs and 17-39% of LeNet-300-100's; a few percent takes 10 to
    100. The ranges set before the factors stopped at 1, and the quickstart's front ended at
    25% (benchmarks/RESULTS.md, "The bundled spaces' lambda ranges")."""
    spec = load_spec(path)
    strength = next(p for p in spec.params if p.name == "penalty.lambda")
    assert strength.kind == "loguniform" and strength.values[1] >= 100
    if "resnet" not in path.stem:  # bundled small models: a collapse is no answer
        assert any(c.metric == "val_accuracy" and c.min for c in spec.constraints)


@pytest.mark.parametrize(
    "path", [p for p in SPACES if "lenet5" not in p.stem and "resnet" not in p.stem]
)
def test_bundled_mlp_spaces_search_input_gating_with_neurons(path: Path) -> None:
    """A structured MLP front needs its inputs gated: the first layer holds most FLOPs."""
    param = next(p for p in load_spec(path).params if p.name == "gate_inputs")
    assert True in param.values and param.when == ("granularity", ("neuron",))


def test_quickstart_searches_every_gate_on_digits() -> None:
    spec = load_spec(Path(__file__).parent.parent / "search_spaces" / "quickstart.yaml")
    gates = next(p for p in spec.params if p.name == "gate")
    assert set(gates.values) == {
        "hard_concrete",
        "arm",
        "gumbel_softmax",
        "trainable_gate",
        "learned_threshold",
        "diffprune",
    }
    assert spec.base.data == "digits" and spec.base.model == "mlp"


# (change to GOOD, the key the one-line error must name)
BAD: list[tuple[dict[str, Any], str]] = [
    ({"epochs": 3}, "epochs"),
    ({"name": ...}, "name"),
    ({"name": "has space"}, "name"),
    ({"trials": "many"}, "trials"),
    ({"trials": 0}, "trials"),
    ({"concurrency": True}, "concurrency"),
    ({"train__momentum": 0.9}, "train.momentum"),
    ({"train__epochs": 1.5}, "train.epochs"),
    ({"train__lr": -1.0}, "train.lr"),
    ({"train__model": "mlp"}, "train.model"),
    ({"model__name": "nope"}, "model.name"),
    ({"model__options": {"depth": 3}}, "model.options"),
    ({"model__layers": 3}, "model.layers"),
    ({"data__name": "imagenet"}, "data.name"),
    ({"data__options": {"colour": True}}, "data.options.colour"),
    ({"data__val_fraction": 0.9}, "data.val_fraction"),
    ({"objectives": {"val_accuracy": "max", "params": "max"}}, "objectives.params"),
    ({"objectives": ["val_accuracy", "energy"]}, "objectives.energy"),
    ({"objectives": ["flops", "latency"]}, "objectives"),
    ({"objectives": ["val_accuracy"]}, "objectives"),
    ({"objectives": ["val_accuracy", "flops", "params", "latency"]}, "objectives"),
    ({"objectives": ["val_accuracy", "flops", "flops"]}, "objectives"),
    ({"objectives": {"val_accuracy": "min", "flops": "min"}}, "objectives.val_accuracy"),
    ({"sampler": {"name": "grid"}}, "sampler.name"),
    ({"sampler": {"name": "tpe", "seed": 1.5}}, "sampler.seed"),
    ({"resources": {"cpu": 0}}, "resources.cpu"),
    ({"resources": {"gpu": 1.5}}, "resources.gpu"),
    ({"resources": {"memory": 4}}, "resources.memory"),
    ({"space": {}}, "space"),
    ({"space__gate": []}, "space.gate"),
    ({"space__gate": ["arm", "arm"]}, "space.gate"),
    ({"space__gate": ["arm", "magic"]}, "space.gate"),
    ({"space__gate": "arm"}, "space.gate"),
    ({"space__granularity": ["weight", "filter"]}, "space.granularity"),
    ({"space__granularity": ["channel"]}, "space.granularity"),  # an MLP has no channels
    ({"space__penalty.lambda": {"uniform": [1.0, 0.5]}}, "space.penalty.lambda.uniform"),
    ({"space__penalty.lambda": {"loguniform": [0.0, 1.0]}}, "space.penalty.lambda.loguniform"),
    ({"space__penalty.lambda": {"uniform": [-1.0, 1.0]}}, "space.penalty.lambda"),
    ({"space__penalty.lambda": {"uniform": [0.1]}}, "space.penalty.lambda.uniform"),
    ({"space__penalty.lambda": {"normal": [0.1, 1]}}, "space.penalty.lambda"),
    ({"space__penalty.lambda": {"int": [1.5, 3]}}, "space.penalty.lambda.int"),
    ({"space__penalty.cost": ["flops", "energy"]}, "space.penalty.cost"),
    ({"space__gate_inputs": [0.5]}, "space.gate_inputs"),
    ({"space__momentum": [0.9]}, "space.momentum"),
    ({"space__arm.nope": [1.0]}, "space.arm.nope"),
    ({"space__arm.k": {"uniform": [-1.0, 3.0]}}, "space.arm.k"),
    ({"space__arm.hard_sigmoid": ["yes"]}, "space.arm.hard_sigmoid"),
    ({"space__diffprune.tau0": [1.0]}, "space.diffprune.tau0"),  # diffprune not searched
    ({"space__gate_lr": [0.01], "train__gate_lr": 0.1}, "space.gate_lr"),
    ({"space__gate": ..., "train__gate": "diffprune"}, "space.arm.k"),
]


@pytest.mark.parametrize(("change", "key"), BAD, ids=[key for _, key in BAD])
def test_bad_space_is_one_line_naming_file_and_key(
    tmp_path: Path, change: dict[str, Any], key: str
) -> None:
    path = write(tmp_path, changed(**change))
    with pytest.raises(SpaceError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: "), message


def test_gate_inputs_needs_a_neuron_granularity(tmp_path: Path) -> None:
    raw = changed(space__granularity=["weight"], space__gate_inputs=[True, False])
    with pytest.raises(SpaceError, match=r": space\.gate_inputs: "):
        load_spec(write(tmp_path, raw))
    raw = changed(train__gate_inputs=True)  # fixed on, but weight granularity may be drawn
    with pytest.raises(SpaceError, match=r": train\.gate_inputs: "):
        load_spec(write(tmp_path, raw))


def test_gate_inputs_is_drawn_only_with_neuron_granularity(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, changed(space__gate_inputs=[True, False])))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = [spec.sample(study.ask()) for _ in range(40)]
    assert all(("gate_inputs" in p) == (p["granularity"] == "neuron") for p in points)
    assert any(p.get("gate_inputs") for p in points)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("name: a: b\n", "line 1"),
        ("- just\n- a list\n", "(file)"),
    ],
)
def test_unreadable_files_are_one_line(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: {key}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "content", [b"\x89PNG\r\n\x1a\n\x00\x00", b"name: caf\xe9\n", b"name: a\x00b\n"]
)
def test_a_file_that_is_not_text_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    with pytest.raises(SpaceError) as caught:
        load_spec(path)
    assert str(caught.value).startswith(f"{path}: (file): not a text file ")
    assert "\n" not in str(caught.value)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"nope\.yaml: \(file\): cannot read it"):
        load_spec(tmp_path / "nope.yaml")


def test_exponent_only_numbers_are_numbers(tmp_path: Path) -> None:
    """PyYAML reads ``1e-3`` as a string; space files are full of them."""
    text = yaml.safe_dump(changed(space__lr=..., train__lr=...)) + "\n"
    text = text.replace("train:\n", "train:\n  lr: 1e-3\n  gate_lr: 5E+0\n")
    spec = load_spec(write(tmp_path, text))
    assert spec.base.lr == pytest.approx(1e-3) and spec.base.gate_lr == pytest.approx(5.0)


def test_conditional_options_are_sampled_only_with_their_gate(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1)
    )
    seen = set()
    for _ in range(30):
        point = spec.sample(study.ask())
        seen.add(point["gate"])
        assert ("arm.k" in point) == (point["gate"] == "arm")
        assert ("gumbel_softmax.tau_min" in point) == (point["gate"] == "gumbel_softmax")
        assert 0.001 <= point["penalty.lambda"] <= 1.0
        config = spec.trial_config(point)
        assert isinstance(config, TrialConfig)
        assert config.gate == point["gate"] and config.granularity == point["granularity"]
        assert config.penalty_lambda == point["penalty.lambda"]
        allowed = get_gate_info(config.gate).option_defaults()
        assert set(config.gate_options) <= set(allowed)
    assert seen == {"arm", "gumbel_softmax", "hard_concrete"}


def test_trial_config_merges_fixed_settings_and_gate_options(tmp_path: Path) -> None:
    raw = changed(space__gate=..., train__gate="arm", train__gate_options={"hard_sigmoid": True})
    raw["space"].pop("gumbel_softmax.tau_min")
    spec = load_spec(write(tmp_path, raw))
    # the gate is fixed, so its options are not conditional: always drawn
    assert all(p.when is None for p in spec.params)
    config = spec.trial_config({"granularity": "neuron", "penalty.lambda": 0.3, "arm.k": 5.0})
    assert config.gate == "arm"
    assert config.gate_options == {"hard_sigmoid": True, "k": 5.0}
    assert config.penalty_lambda == 0.3 and config.epochs == 1 and config.lr == 0.01
    assert config.model == "mlp" and config.model_options == {"hidden": [16]}
    assert config.data_options == {"n_samples": 64}


def test_describe_lists_fixed_and_searched_settings(tmp_path: Path) -> None:
    described = load_spec(write(tmp_path, GOOD)).describe()
    assert described["space.penalty.lambda"] == "loguniform[0.001, 1.0]"
    assert "gate in ['arm']" in described["space.arm.k"]
    assert described["fixed.epochs"] == 1 and "fixed.gate" not in described


def test_the_model_check_loads_data_only_when_its_geometry_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archsearch.data import DatasetInfo
    from archsearch.space import preflight

    loaded: list[str] = []
    real_load = preflight.load_dataset
    monkeypatch.setattr(
        preflight, "load_dataset", lambda name, **kw: loaded.append(name) or real_load(name, **kw)
    )
    load_spec(write(tmp_path, GOOD))
    assert loaded == []  # the registry knows synthetic's geometry from its options
    monkeypatch.setattr(DatasetInfo, "geometry", lambda self, options=None: None)
    load_spec(write(tmp_path, GOOD))
    assert loaded == ["synthetic"]


def test_relative_data_root_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write(tmp_path, changed(data__root="data")))
    assert spec.base.data_root == str(tmp_path / "data")


def test_the_preflight_says_when_a_granularity_cannot_reach_small_budgets(tmp_path) -> None:
    """LeNet-5-Caffe's neurons are its fully connected layers, 18% of its FLOPs: a neuron
    trial can never go below 82%, which a user should read before the first trial, not
    after a search whose quarter was spent there."""
    raw = changed(
        model={"name": "lenet5_caffe"},
        data={"name": "synthetic", "options": {"n_samples": 64, "input_shape": [1, 28, 28]}},
        space__granularity=["neuron", "channel"],
    )
    report = load_spec(write(tmp_path, raw)).preflight
    assert "neuron: no trial can go below 82% of the dense FLOPs" in "\n".join(report)
    assert not any(line.startswith("channel: no trial") for line in report)


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_every_bundled_granularity_can_reach_a_tenth_of_the_flops(path: Path) -> None:
    assert not any("no trial can go below" in line for line in load_spec(path).preflight)
