import json

import pytest

from lib_lora_train.settings import SettingsError, TrainSettings


def test_defaults_are_valid_and_round_trip_through_json():
    settings = TrainSettings()
    again = TrainSettings.from_json(settings.to_json())
    assert again == settings
    assert json.loads(settings.to_json())["rank"] == 16


def test_values_from_forms_and_json_are_converted():
    s = TrainSettings.from_dict(
        {"rank": "8", "epochs": 3.0, "flip": "true", "unet_lr": "2e-4", "sample_prompts": "a\n\nb"}
    )
    assert (s.rank, s.epochs, s.flip, s.unet_lr, s.sample_prompts) == (8, 3, True, 2e-4, ["a", "b"])


@pytest.mark.parametrize(
    ("data", "field", "hint"),
    [
        ({"rnak": 4}, "rnak", "unknown setting"),
        ({"rank": 0}, "rank", "between 1 and 1024"),
        ({"network": "dora"}, "network", "lora, locon, loha, lokr"),
        ({"resolution": 500}, "resolution", "use 448"),
        ({"epochs": 2.5}, "epochs", "whole number"),
        ({"flip": "maybe"}, "flip", "true or false"),
        ({"unet_lr": 0, "te_lr": 0}, "unet_lr", "nothing would train"),
        ({"caption_extension": "txt"}, "caption_extension", "'.txt'"),
        ({"output_name": "../evil"}, "output_name", "plain file name"),
        ({"max_bucket_side": 256, "min_bucket_side": 256}, "max_bucket_side", "at least the resolution"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(data, field, hint):
    with pytest.raises(SettingsError) as info:
        TrainSettings.from_dict(data)
    assert info.value.field == field
    assert hint in str(info.value)


def test_replace_validates():
    with pytest.raises(SettingsError):
        TrainSettings().replace(optimizer="rmsprop")
    assert TrainSettings().replace(optimizer="sgd").optimizer == "sgd"
