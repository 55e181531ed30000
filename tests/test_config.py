import re
from pathlib import Path

import pytest
import yaml

from trade_agent.config import FeaturesConfig, load_params, params_from_dict
from trade_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_load_into_typed_frozen_sections() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "sample"
    assert params.features.return_periods == [1, 2, 5, 10, 20]
    assert params.embargo_bars == params.labels.horizon + params.features.sequence_length
    with pytest.raises(AttributeError):
        params.features.rsi_period = 3  # type: ignore[misc]


def test_wrong_type_names_key_expected_type_and_value(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["features"]["rsi_period"] = "ten"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value) == (f"{path}: features.rsi_period: expected int, got str 'ten'; fix it in params.yaml")


def test_unknown_key_lists_valid_keys_with_types() -> None:
    with pytest.raises(ConfigError) as err:
        params_from_dict({"labels": {"horizon": 5, "horizn": 3}})
    message = str(err.value)
    assert message.startswith("labels.horizn is not a valid key")
    assert "dead_zone: float" in message and "horizon: int" in message


def test_unknown_section_and_bad_choice_and_bad_list_item() -> None:
    with pytest.raises(ConfigError, match="unknown section 'optimiser'"):
        params_from_dict({"optimiser": {}})
    with pytest.raises(ConfigError, match=r"data.source: expected 'sample' \| 'synthetic' \| 'file'"):
        params_from_dict({"data": {"source": "yahoo"}})
    with pytest.raises(ConfigError, match=r"features.return_periods\[1\]: expected int, got str"):
        params_from_dict({"features": {"return_periods": [1, "5"]}})
    with pytest.raises(ConfigError, match="expected int, got bool"):
        params_from_dict({"labels": {"horizon": True}})


def test_int_is_accepted_for_float_and_cross_section_rules() -> None:
    assert params_from_dict({"labels": {"dead_zone": 0}}).labels.dead_zone == 0.0
    with pytest.raises(ConfigError, match="embargo_bars: 3 is below horizon \\+ sequence_length = 31"):
        params_from_dict({"splits": {"embargo_bars": 3}})
    with pytest.raises(ConfigError, match="sum to 1"):
        params_from_dict({"splits": {"train": 0.8, "val": 0.15, "test": 0.15}})
    with pytest.raises(ConfigError, match=r"data\.path: required"):
        params_from_dict({"data": {"source": "file"}})


def test_missing_params_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("features: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_defaults_give_about_thirty_features() -> None:
    from trade_agent.features.indicators import feature_names

    assert 30 <= len(feature_names(FeaturesConfig())) <= 40


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("patience", 0, "cnn_lstm.patience: must be >= 1"),
        ("weight_decay", -0.1, "cnn_lstm.weight_decay: must be >= 0"),
        ("kernel_sizes", [0, 3], "every entry must be >= 1"),
        ("attention_heads", 3, "must divide lstm_hidden 64"),
        ("regression_weight", -1.0, "cnn_lstm.regression_weight: must be >= 0"),
    ],
)
def test_cnn_lstm_values_are_checked(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        params_from_dict({"cnn_lstm": {key: value}})


def test_device_names() -> None:
    assert params_from_dict({"base": {"device": "cuda:1"}}).base.device == "cuda:1"
    with pytest.raises(ConfigError, match=r"base\.device: 'gpu' is unknown"):
        params_from_dict({"base": {"device": "gpu"}})


def test_a_freeze_as_long_as_the_run_is_refused() -> None:
    from trade_agent.config import params_from_dict

    with pytest.raises(ConfigError, match=r"freeze_encoder_steps \(512\) is not below hybrid.total_timesteps \(512\)"):
        params_from_dict({"hybrid": {"total_timesteps": 512, "freeze_encoder_steps": 512}})
