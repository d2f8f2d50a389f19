import dataclasses
import tomllib

import pytest

from mnist_ffn.config import (
    ACTIVATIONS,
    ALL_KEYS,
    Config,
    config_from_dict,
    load_config,
    to_toml,
    validate,
)
from mnist_ffn.errors import ConfigError
from mnist_ffn.presets import shipped
from tests.helpers import PROJECT_ROOT

CONFIG_FILES = [item.path for item in shipped("preset").values()]  # read from the installed package


def test_defaults_are_valid():
    assert validate(Config()) == []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_every_shipped_config_loads_and_validates(path):
    config = load_config(path)
    assert validate(config) == []
    assert path.read_text().startswith("# "), "each config starts with a comment saying what it is for"


def test_default_toml_is_what_train_uses_without_flags():
    assert load_config(shipped("preset")["default"].path) == Config()


def test_precedence_defaults_then_file_then_set(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[optim]\nlr = 0.05\nmomentum = 0.5\n[model]\nactivation = "tanh"\n')
    config = load_config(path, ["optim.lr=0.01", "model.hidden=[256,128]"])
    assert config.optim.lr == 0.01  # --set beats the file
    assert config.optim.momentum == 0.5  # the file beats the default
    assert config.model.activation == "tanh"
    assert config.model.hidden == [256, 128]
    assert config.train.epochs == Config().train.epochs  # untouched keys keep their defaults


def test_set_values_are_toml_or_bare_strings():
    config = load_config(None, ["model.activation=sigmoid", "optim.nesterov=false", "train.epochs=3", "optim.lr=1e-2"])
    assert config.model.activation == "sigmoid"
    assert config.optim.nesterov is False
    assert config.train.epochs == 3
    assert config.optim.lr == 0.01


def test_an_int_is_accepted_where_a_float_is_expected():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


def test_empty_hidden_list_is_softmax_regression():
    assert load_config(None, ["model.hidden=[]"]).model.hidden == []


def test_every_problem_is_reported_at_once_with_its_key():
    with pytest.raises(ConfigError) as caught:
        load_config(
            None,
            [
                "optim.lr=-1",
                "train.batch_size=0",
                "model.dropout=1.0",
                "model.activation=bogus",
                "optim.schedule=zigzag",
                "train.val_size=60000",
                "train.epochs=2.5",
                "optim.learning_rate=0.1",
            ],
        )
    problems = caught.value.problems
    expected_keys = [
        "optim.lr",
        "train.batch_size",
        "model.dropout",
        "model.activation",
        "optim.schedule",
        "train.val_size",
        "train.epochs",
        "optim.learning_rate",
    ]
    for key in expected_keys:
        assert any(problem.startswith(key) for problem in problems), (key, problems)
    assert len(problems) == len(expected_keys)


def test_unknown_activation_lists_the_valid_choices():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["model.activation=bogus"])
    message = str(caught.value)
    assert "bogus" in message
    for name in ACTIVATIONS:
        assert name in message


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("model.activaton=relu", "model.activation"),
        ("optim.learning_rate=0.1", "optim.lr"),
        ("train.epoch=3", "train.epochs"),
        ("modle.hidden=[1]", "model"),
        ("lr=0.1", "optim.lr"),
    ],
)
def test_unknown_keys_get_a_did_you_mean(override, suggestion):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert f"did you mean {suggestion}?" in str(caught.value)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model.hidden=[512, 0]", "every width must be > 0"),
        ("model.hidden=512", "must be a list of whole numbers"),
        ("optim.nesterov=1", "must be true or false"),
        ("model.activation=3", "must be a string"),
        ("train.seed=-1", "must be between 0 and 2**63 - 1"),
        ("optim.momentum=1.5", "must be >= 0 and < 1"),
        ("optim.nesterov=true", None),
    ],
)
def test_wrong_types_and_ranges(override, fragment):
    if fragment is None:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert fragment in str(caught.value)


def test_nesterov_needs_momentum():
    with pytest.raises(ConfigError, match=r"optim\.nesterov: needs optim\.momentum > 0"):
        load_config(None, ["optim.momentum=0"])


def test_a_missing_or_broken_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nhidden = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_unknown_section_in_a_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[optimizer]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match=r"optimizer: unknown section; did you mean optim\?"):
        load_config(path)


def test_to_toml_round_trips():
    config = load_config(
        None, ["model.hidden=[64, 32]", "model.activation=gelu", "optim.lr=0.003", "augment.hflip=true"]
    )
    assert load_config_from_text(to_toml(config)) == config


def load_config_from_text(text: str) -> Config:
    return config_from_dict(tomllib.loads(text))


def test_all_keys_covers_every_field():
    fields = [
        f"{section.name}.{field.name}"
        for section in dataclasses.fields(Config)
        for field in dataclasses.fields(section.default_factory())
    ]
    assert sorted(fields) == sorted(ALL_KEYS)


CONFIGURATION_PAGE = PROJECT_ROOT / "docs" / "configuration.md"


def test_the_configuration_page_documents_every_config_key():
    page = CONFIGURATION_PAGE.read_text()
    missing = [key for key in ALL_KEYS if f"| `{key}` |" not in page]
    assert not missing, f"docs/configuration.md lacks a line for {missing}"


def test_the_lesson_presets_are_shipped():
    assert {path.name for path in CONFIG_FILES} >= {
        "default.toml",
        "smoke.toml",
        "relu.toml",
        "tanh.toml",
        "sigmoid.toml",
        "linear.toml",
    }


def test_the_configuration_pages_table_is_drawn_from_the_documented_keys():
    """Each key is documented once (config.py's field metadata); the configuration page's table must be that table."""
    from mnist_ffn.config import reference_table

    assert reference_table() in CONFIGURATION_PAGE.read_text(), (
        "paste python -c 'from mnist_ffn.config import reference_table; print(reference_table())' into "
        "docs/configuration.md"
    )


def test_every_key_is_documented_and_listed_in_train_help():
    from mnist_ffn.config import key_docs
    from tests.helpers import run_cli

    docs = key_docs()
    assert [name for name, _, _ in docs] == ALL_KEYS
    assert all(doc.strip() for _, _, doc in docs)
    shown = " ".join(run_cli("train", "--help").stdout.split())  # rich wraps lines; compare words
    for name, _, _ in docs:
        assert name in shown, name


def test_each_list_has_one_source():
    """Data set names, the lesson's activations and the model's activation layers agree with the config's lists."""
    import inspect

    from mnist_ffn.catalog import DATASETS, PLANE_SETS, POINTS
    from mnist_ffn.cli import commands as cli
    from mnist_ffn.config import DATASET_NAMES, LESSON_ACTIVATIONS, activation_function
    from mnist_ffn.experiments import compare
    from mnist_ffn.training.model import ACTIVATION_LAYERS

    assert (*DATASETS, *PLANE_SETS, POINTS) == DATASET_NAMES
    assert [choice.value for choice in cli.DatasetName] == list(DATASET_NAMES)
    assert set(ACTIVATION_LAYERS) == {activation_function(name) for name in ACTIVATIONS}
    assert set(LESSON_ACTIVATIONS) <= set(ACTIVATIONS)
    default = inspect.signature(cli.compare).parameters["activations"].default
    assert compare.parse_activations(default) == list(LESSON_ACTIVATIONS)


def test_the_resume_command_names_the_folder_the_data_and_a_chosen_device(tmp_path):
    from mnist_ffn.training.run_folder import resume_command

    data = tmp_path / "data"
    assert resume_command(tmp_path / "r", data) == f"mnist-ffn train --resume {tmp_path / 'r'} --data-dir {data}"
    assert resume_command(tmp_path / "r", data, "cpu").endswith(f"--data-dir {data} --device cpu")
