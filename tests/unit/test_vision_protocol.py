"""scripts/rotated_mnist_table.py --protocol (issue 26): the real protocol's settings are the ones the
table's commands run with and the ones table.json / table.md record; an explicit flag overrides one
and is recorded as such; ``demo`` is the old defaults exactly (the committed tables stay
reproducible). Nothing is trained: the table's fairseq-train calls are captured, its searches write
a random genotype, testing is faked (as in test_table_protocols.py)."""

import json
import logging
import os
import re

import numpy as np
import pytest
import torch

from mdnas_fairseq.cells.conv import DartsConvClassifier
from mdnas_fairseq.derive import write_derived
from mdnas_fairseq.search import random_genotype
from tests.helpers.fairseq_runs import load_script

# the table's defaults before --protocol (commit cee0be0): what ``demo`` must stay
OLD_DEFAULTS = {
    "train_images_per_domain": 128,
    "heldout_images_per_domain": 128,
    "search_epochs": 5,
    "retrain_epochs": 200,
    "batch_size": 32,
    "lr": 0.01,
    "weight_decay": 5e-4,
    "alpha_lr": 0.3,
    "alpha_order": 1,
    "channels": 8,
    "num_nodes": 4,
    "stem_stride": 2,
    "stem_pool": 2,
    "augment_shift": 2,
    "struct_coef": 5.0,
    "contrastive_coef": 0.1,
    "param_coef": 1.0,
    "models": "single,struct,contr",
    "random_count": 5,
    "random_reference": "struct",
}
# the fairseq-train flag of each setting that every command carries
EVERY_COMMAND = {
    "train_images_per_domain": "--train-images-per-domain",
    "heldout_images_per_domain": "--heldout-images-per-domain",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "alpha_lr": "--alpha-lr",
    "alpha_order": "--alpha-order",
    "channels": "--channels",
    "num_nodes": "--num-nodes",
    "stem_stride": "--stem-stride",
    "stem_pool": "--stem-pool",
    "augment_shift": "--augment-shift",
}
RUN_DIR = re.compile(r"^D\d+_([a-z]+)_seed\d+$")
REGULARIZER = {"struct": "--struct-coef", "contr": "--contrastive-coef", "param": "--param-coef"}


def _flag_values(cmd, flag):
    return [cmd[i + 1] for i, x in enumerate(cmd) if x == flag]


def _save_dir(cmd):
    return _flag_values(cmd, "--save-dir")[0]


def _model(cmd):
    """The row of a command, from its folder: <work>/D<D>_<model>_seed<S>/..."""
    parts = _save_dir(cmd).split(os.sep)
    (model,) = [m.group(1) for m in map(RUN_DIR.match, parts) if m]
    return model


@pytest.fixture
def table(tmp_path, monkeypatch):
    """rotated_mnist_table with its runs in this process and its training calls captured: a search
    writes a random genotype of the command's cell; testing returns a fixed score."""
    module = load_script("rotated_mnist_table")
    commands = []

    def fake_train(argv):
        commands.append(list(argv))
        if "--genotype" not in argv:  # a search: its genotype, of the command's own cell
            domains = [f"rot{r}" for r in _flag_values(argv, "--rotations")[0].split(",")]
            net = DartsConvClassifier(
                domains,
                channels=int(_flag_values(argv, "--channels")[0]),
                num_nodes=int(_flag_values(argv, "--num-nodes")[0]),
            )
            genotype = random_genotype(net.space, domains, np.random.default_rng(len(commands)))
            path = f"{_save_dir(argv)}/genotype.json"
            write_derived(path, genotype, net.param_table(), {"method": "test"})

    def fake_evaluate(checkpoint, a, D, subset="test"):
        return {
            "acc_per_domain": {f"rot{90 * d}": 50.0 for d in range(D)},
            "acc": 50.0,
            "test_images_per_domain": 10000,
            "params": 1,
            "genotype_params": 1,
            "cell_params": 1,
            "mnist_source": "fake",
            "union_ops": 1,
            "genotype": {},
        }

    monkeypatch.setattr(module, "fairseq_train", fake_train)
    monkeypatch.setattr(module, "evaluate", fake_evaluate)
    monkeypatch.setattr(module, "call_in_child", lambda fn, path, what: fn())
    monkeypatch.setattr(module, "plot", lambda rows, path: None)
    threads, level = torch.get_num_threads(), logging.getLogger().level
    out = tmp_path / "out"

    def main(*argv):
        commands.clear()
        module.main(["--out", str(out), "--work-dir", str(tmp_path / "work")] + list(argv))
        with open(out / "table.json", encoding="utf-8") as f:
            record = json.load(f)
        return record, (out / "table.md").read_text(encoding="utf-8"), list(commands)

    yield module, main
    torch.set_num_threads(threads)  # run_one sets them for its (here: this) process
    logging.getLogger().setLevel(level)


def _assert_commands_ran_with(settings, commands, D):
    """Every command carries ``settings``: sizes, optimizer, cell; epochs by stage; each search its
    row's regularizer; one search and one retrain per searched row, random_count random retrains."""
    searches = [c for c in commands if "--genotype" not in c]
    retrains = [c for c in commands if "--genotype" in c]
    rows = settings["models"].split(",")
    searched = [m for m in rows if m != "random"]
    assert sorted(_model(c) for c in searches) == sorted(searched)
    randoms = settings["random_count"] if "random" in rows else 0
    assert len(retrains) == len(searched) + randoms
    for c in commands:
        assert _flag_values(c, "--rotations") == [",".join(str(90 * k) for k in range(D))]
        for key, flag in EVERY_COMMAND.items():
            assert _flag_values(c, flag) == [str(settings[key])], (key, c)
    for c in searches:
        assert _flag_values(c, "--max-epoch") == [str(settings["search_epochs"])]
        model = _model(c)
        for m, flag in REGULARIZER.items():
            expected = [str(settings[flag[2:].replace("-", "_")])] if m == model else []
            assert _flag_values(c, flag) == expected, (model, flag)
    for c in retrains:
        assert _flag_values(c, "--max-epoch") == [str(settings["retrain_epochs"])]
        assert not any(flag in c for flag in REGULARIZER.values())


def test_the_real_protocol_is_what_runs_and_what_the_results_record(table):
    module, main = table
    entry = module.PROTOCOLS["real"]
    assert entry["train_images_per_domain"] >= 10 * OLD_DEFAULTS["train_images_per_domain"]
    assert set(entry["models"].split(",")) == {"single", "struct", "contr", "param", "random"}
    record, md, commands = main("--protocol", "real", "--domains", "4", "--seeds", "0")
    protocol = record["protocol"]
    assert protocol["name"] == "real" and record["settings"]["protocol"] == "real"
    assert protocol["defaults"] == entry and protocol["overridden"] == {}
    assert protocol["settings"] == entry  # what the record says ...
    _assert_commands_ran_with(protocol["settings"], commands, 4)  # ... is what ran
    for key, value in entry.items():  # and the table's own settings say the same
        assert record["settings"][key] == value, key
    assert [r["model"] for r in record["rows"]] == entry["models"].split(",")
    assert record["rows"][-1]["runs"] == entry["random_count"]
    assert "Protocol `real`: " in md and "Changed by flags: none." in md
    for key, value in entry.items():
        assert f"{key} `{value}`" in md
    # the estimate the protocol was sized by: about 100 minutes per seed at D = 4 on one core
    assert 60 <= record["estimated_minutes"]["4"] <= 100
    assert record["command"].endswith("--protocol real --domains 4 --seeds 0")


def test_an_explicit_flag_overrides_the_protocol_and_is_recorded(table):
    module, main = table
    entry = module.PROTOCOLS["real"]
    flags = ["--retrain-epochs", "3", "--train-images-per-domain", "64", "--lr", "0.02"]
    flags += ["--models", "struct,random", "--random-count", "2"]
    record, md, commands = main("--protocol", "real", "--domains", "2", "--seeds", "1", *flags)
    protocol = record["protocol"]
    changed = {
        "retrain_epochs": 3,
        "train_images_per_domain": 64,
        "lr": 0.02,
        "models": "struct,random",
        "random_count": 2,
    }
    assert protocol["defaults"] == entry
    assert protocol["overridden"] == changed
    assert protocol["settings"] == {**entry, **changed}
    _assert_commands_ran_with(protocol["settings"], commands, 2)
    searches = [c for c in commands if "--genotype" not in c]
    assert _flag_values(searches[0], "--max-epoch") == [str(entry["search_epochs"])]
    assert _flag_values(searches[0], "--heldout-images-per-domain") == [
        str(entry["heldout_images_per_domain"])
    ]
    stated = md.split("Changed by flags: ")[1].split(".\n")[0]
    assert set(stated.split(", ")) == set(changed)


def test_demo_is_the_old_defaults(table):
    module, main = table
    argv = ["--out", "o"]
    plain = module.build_parser().parse_args(argv)
    demo = module.get_args(argv + ["--protocol", "demo"])
    assert module.get_args(argv).protocol == "demo"
    for key, value in vars(plain).items():
        assert getattr(demo, key) == value, key
    assert {k: getattr(demo, k) for k in OLD_DEFAULTS} == OLD_DEFAULTS
    assert set(demo.protocol_record["settings"]) == set(module.RECORDED)
    assert demo.protocol_record["overridden"] == {}
    models = ["--models", "single,struct,contr,param,random", "--random-count", "2"]
    record, md, commands = main("--protocol", "demo", "--domains", "2", "--seeds", "0", *models)
    _assert_commands_ran_with({**OLD_DEFAULTS, "random_count": 2, "models": models[1]}, commands, 2)
    assert record["protocol"]["name"] == "demo"
    assert record["protocol"]["settings"] == {
        **OLD_DEFAULTS,
        "random_count": 2,
        "models": models[1],
    }
    assert "Protocol `demo`: " in md
    # the flag itself changes nothing: the same commands as without it
    _, _, without = main("--domains", "2", "--seeds", "0", *models)
    assert without == commands


def test_a_protocol_is_applied_only_by_get_args_and_not_part_of_a_runs_settings(table):
    module, _ = table
    plain = module.build_parser().parse_args(["--out", "o", "--protocol", "real"])
    with pytest.raises(SystemExit, match="only scripts/rotated_mnist_table.py's get_args"):
        module.train_argv(plain, "run", 2, 0, "struct", "search")
    # --resume compares a run's settings: the same settings reached by a protocol or by flags
    # (or recorded before --protocol existed) are the same run
    real = module.get_args(["--out", "o", "--protocol", "real"])
    by_flags = module.get_args(
        ["--out", "o"]
        + [
            x
            for k, v in module.PROTOCOLS["real"].items()
            for x in ("--" + k.replace("_", "-"), str(v))
        ]
    )
    assert module.protocol(real, "random") == module.protocol(by_flags, "random")
    assert "protocol" not in module.protocol(real, "random")
