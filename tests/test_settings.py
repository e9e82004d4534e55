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
        ({"dora_wd": True, "network": "loha"}, "dora_wd", "lora or locon"),
        ({"rank_dropout": 1.5}, "rank_dropout", "between 0 and 0.99"),
        ({"down_lr_weight": "sin"}, "down_lr_weight", "sine, cosine"),
        ({"down_lr_weight": "1,1,1"}, "down_lr_weight", "give 12 or 9"),
        ({"down_lr_weight": "cosine+x"}, "down_lr_weight", "is not a number"),
        ({"block_dims": ",".join(["4"] * 24)}, "block_dims", "give 25 or 23"),
        ({"block_dims": ",".join(["4.5"] * 25)}, "block_dims", "whole numbers"),
        ({"block_alphas": ",".join(["4"] * 25)}, "block_alphas", "needs block_dims"),
        ({"dim_from_weights": True}, "dim_from_weights", "needs network_weights"),
        ({"mask_dir": "masks"}, "mask_dir", "turn masked_loss on"),
        ({"min_timestep": 500, "max_timestep": 400}, "max_timestep", "above min_timestep"),
        ({"loss_type": "mse"}, "loss_type", "l2, l1, huber, smooth_l1"),
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


def test_block_wise_and_preset_values_are_accepted():
    s = TrainSettings.from_dict(
        {"down_lr_weight": "cosine+.25", "mid_lr_weight": "0.5", "up_lr_weight": ",".join(["1"] * 9),
         "block_dims": ",".join(["8"] * 25), "block_alphas": ",".join(["4"] * 25)}
    )  # fmt: skip
    assert s.down_lr_weight == "cosine+.25"
