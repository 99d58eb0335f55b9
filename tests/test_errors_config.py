"""Bad training config values: one paragraph naming the dotted field and what was expected, before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
from _fake_data import make_dataset
from _tiny_training import tiny_config

import train as train_script
from emca.cli import user_errors


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, height=32, width=16)
    return root


CASES = {
    "model.optim.lr=-1": ("'model.optim.lr' is -1.0", "> 0"),
    "model.optim.lr=fast": ("'model.optim.lr' is 'fast'", "a number"),
    "model.optim.lr=0": ("'model.optim.lr' is 0.0", "> 0"),
    "model.optim.betas=[0.5]": ("'model.optim.betas'", "2 values"),
    "model.optim.betas=[0.5,1.5]": ("'model.optim.betas[1]' is 1.5", "< 1"),
    "model.optim.decay_iterations=-5": ("'model.optim.decay_iterations' is -5", ">= 0"),
    "model.optim.constant_iterations=2.5": ("'model.optim.constant_iterations' is 2.5", "an integer"),
    "model.loss.lambda_l1=inf": ("'model.loss.lambda_l1' is inf", "(finite)"),
    "model.loss.lambda_gan=-1": ("'model.loss.lambda_gan' is -1.0", ">= 0"),
    "model.loss.gan_mode=wgan": ("'model.loss.gan_mode' is 'wgan'", "['lsgan', 'vanilla']"),
    "model.loss.pool_size=-2": ("'model.loss.pool_size' is -2", ">= 0"),
    "model.ema_decay=2": ("'model.ema_decay' is 2.0", "< 1"),
    "model.grad_clip=0": ("'model.grad_clip' is 0.0", "> 0"),
    "model.generator.ngf=0": ("'model.generator.ngf' is 0", ">= 1"),
    "model.generator.num_blocks=0": ("'model.generator.num_blocks' is 0", ">= 1"),
    "model.generator.dropout=2": ("'model.generator.dropout' is 2.0", "<= 1"),
    "model.generator.ngf=wide": ("'model.generator.ngf' is 'wide'", "an integer"),
    "model.discriminator.ndf=-3": ("'model.discriminator.ndf' is -3", ">= 1"),
    "model.discriminator.dropout=-0.5": ("'model.discriminator.dropout' is -0.5", ">= 0"),
    "+model.generator.colour=3": ("'model.generator.colour'", "no option 'colour'"),
    "data.val_subset=0": ("'data.val_subset' is 0", ">= 1"),
    "data.batch_size=0": ("'data.batch_size' is 0", ">= 1"),
    # without {split} both splits would read the same file
    "data.pairs_file=my-pairs.csv": (
        "data.pairs_file is 'my-pairs.csv'; it must contain {split}",
        "\"data.pairs_file='my-pairs-{split}.csv'\"",
    ),
    "threads=0": ("'threads' is 0", ">= 1"),
    "retain_freed_memory=sometimes": ("'retain_freed_memory' is 'sometimes'", "true or false"),
    # the module sets the Trainer's step budget from the schedule
    "trainer.max_steps=9": ("trainer.max_steps is 9", "model.optim.constant_iterations"),
}


@pytest.mark.parametrize("override", sorted(CASES))
def test_bad_value_names_the_field_before_training(
    override: str, data_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    field, expected = CASES[override]
    fitted = []
    monkeypatch.setattr(pl.Trainer, "fit", lambda *args, **kwargs: fitted.append(True))
    with pytest.raises(SystemExit) as exit_info, user_errors():
        train_script.train(tiny_config(data_root, tmp_path / "run", override))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert field in err and expected in err and "Traceback" not in err
    assert not fitted, "the error must come before training starts"


def test_an_unquoted_split_placeholder_gets_the_quoting_instead_of_hydras_parse_error(capsys) -> None:
    from emca.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["data.annotation_file=ann-{split}.csv"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Hydra reads '{' as the start of a dictionary" in err
    assert "\"data.annotation_file='ann-{split}.csv'\"" in err and "mismatched input" not in err
