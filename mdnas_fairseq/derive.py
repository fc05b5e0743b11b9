"""``mdnas-derive``: new genotypes from a finished search.

    mdnas-derive SEARCH_OUT --random-seed K [--match-params [--tolerance 0.02] [--max-draws M]] --out FILE
    mdnas-derive SEARCH_OUT --param-budget N --out FILE
    mdnas-derive SEARCH_OUT --select argmax --out FILE
    mdnas-derive SEARCH_CHECKPOINT --select perturbation [--perturb-batches B]
                 [--perturb-finetune-steps N] [--perturb-subset S] [--data DIR] --out FILE

SEARCH_OUT is a search's save dir (its ``genotype.json``) or a genotype.json. It must hold the
fields a search writes: ``search_space``, ``domains``, ``cells``, ``param_table`` (parameter counts
of the modules) and, for ``--param-budget``, ``alpha`` (softmax(alpha) per domain). FILE is a
genotype file in the format a search writes, with ``param_counts`` (every domain alone, the
multimodel and its cell modules alone), ``param_table`` and ``derived_by`` (how it was made: the seed and the number of
draws, or the budget and every move taken). These modes import only the search core and numpy/torch.

``--select perturbation`` (Wang et al., ICLR 2021; :mod:`mdnas_fairseq.search.selection`) needs the
supernetwork and the data: SEARCH_CHECKPOINT is a search checkpoint (or a save dir: its
``checkpoint_last.pt``), loaded the way fairseq loads it (the task, model and criterion of the
checkpoint's own configuration). Every architecture's held-out loss is the token-mean
cross-entropy of its domains on the first ``--perturb-batches`` batches of each domain's
``--perturb-subset`` (default: the search's ``--heldout-subset``, the split its alpha was fit on;
an evaluation split, valid or test, is refused); the fine-tune between decisions takes
``--perturb-finetune-steps`` steps of the search's weight optimizer (fresh state, the search's
learning rate or ``--perturb-lr``, its --clip-norm), each on one training batch of every domain.
The file records ``"selection": "perturbation"`` and, in ``derived_by``, the settings, the orders
and every decision with the losses it compared.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .provenance import display_path
from .search.budget import BUDGET_RULE, argmax_genotype, derive_with_budget
from .search.genotype import (
    GenotypeError,
    MultiDomainGenotype,
    genotype_from_dict,
    read_genotype_json,
    save_genotype,
)
from .search.params import DerivationError, ParamTable
from .search.random_genotypes import (
    MATCH_MAX_DRAWS,
    MATCH_TOLERANCE,
    SHARING,
    random_matched_genotype,
    sharing_draw,
)
from .search.selection import ORDERS, SelectionError, mixing_override, perturbation_select

GENOTYPE_FILE = "genotype.json"
CHECKPOINT_FILE = "checkpoint_last.pt"
ROW_SUM_TOLERANCE = 1e-3
PERTURB_BATCHES = 8
PERTURB_FINETUNE_STEPS = 5
EVALUATION_SPLITS = ("valid", "test")


def resolve_search_out(search_out: str) -> str:
    """The genotype.json of a search dir, or the given file."""
    if os.path.isdir(search_out):
        return os.path.join(search_out, GENOTYPE_FILE)
    if search_out.endswith(".pt"):
        raise DerivationError(
            f"{search_out}: a checkpoint; this mode reads the search's {GENOTYPE_FILE}: give the "
            "save dir or the genotype file (only --select perturbation reads the checkpoint)"
        )
    return search_out


def _require(data: Dict[str, Any], field: str, path: str, why: str) -> Any:
    if field not in data:
        raise DerivationError(
            f"{path}: field {field!r} is missing ({why}); this file was not written by a search of this version "
            f"(an older search?): re-run the search, or add the field"
        )
    return data[field]


def load_search(path: str) -> Tuple[Dict[str, Any], MultiDomainGenotype, ParamTable]:
    """The raw JSON, the searched genotype and its parameter table, checked for consistency."""
    data = read_genotype_json(path)
    genotype = genotype_from_dict(data, source=path)
    raw_table = _require(
        data, "param_table", path, "the parameter counts of the search space's modules"
    )
    table = ParamTable.from_dict(raw_table, genotype.space, source=path)
    counts = data.get("param_counts")
    if (
        isinstance(counts, dict)
        and "multimodel" in counts
        and counts["multimodel"] != table.multimodel_count(genotype)
    ):
        raise DerivationError(
            f"{path}: param_counts.multimodel is {counts['multimodel']} but param_table counts "
            f"{table.multimodel_count(genotype)} for the file's cells; the file is inconsistent"
        )
    return data, genotype, table


def search_probs(data: Dict[str, Any], genotype: MultiDomainGenotype, path: str) -> np.ndarray:
    """softmax(alpha) (D, E, K) from the ``alpha`` field, checked against the space and the cells."""
    raw = _require(data, "alpha", path, "softmax(alpha) per domain, needed by --param-budget")
    space, names = genotype.space, list(genotype.domains)
    if not isinstance(raw, dict) or sorted(raw) != sorted(names):
        raise DerivationError(
            f"{path}: field 'alpha' must map the domains {names} to softmax weights"
        )
    try:
        probs = np.asarray([raw[n] for n in names], dtype=np.float64)
    except (TypeError, ValueError):
        raise DerivationError(f"{path}: field 'alpha' holds something other than numbers") from None
    if probs.shape != (len(names), space.num_edges, space.num_ops):
        raise DerivationError(
            f"{path}: field 'alpha' has shape {probs.shape}, expected {len(names)} domains x {space.num_edges} "
            f"edges x {space.num_ops} operations"
        )
    if (
        not np.isfinite(probs).all()
        or (np.abs(probs.sum(-1) - 1.0) > ROW_SUM_TOLERANCE).any()
        or (probs < 0).any()
    ):
        raise DerivationError(
            f"{path}: field 'alpha' must hold softmax(alpha): finite weights >= 0 summing to 1 per edge"
        )
    argmax = argmax_genotype(probs, space, names)
    for n in names:
        if argmax.cells[n] != genotype.cells[n]:
            raise DerivationError(
                f"{path}: the cell of {n!r} is not the argmax of its field 'alpha'; the file is inconsistent"
            )
    return probs


def derive_random(
    path: str,
    seed: int,
    match: bool,
    tolerance: float = MATCH_TOLERANCE,
    max_draws: int = MATCH_MAX_DRAWS,
    sharing: str = "independent",
):
    """Every domain's genotype drawn at random (``seed``) in the search's space, the domains' cells
    related as ``sharing`` says (independent or copied); with ``match``, redrawn until the
    multimodel's cell parameters are within ``tolerance`` below the search's
    (:func:`~mdnas_fairseq.search.random_genotypes.random_matched_genotype`)."""
    data, searched, table = load_search(path)
    rng = np.random.default_rng(seed)
    space, names = searched.space, list(searched.domains)
    target = table.multimodel_cell_count(searched)
    record: Dict[str, Any] = {
        "method": "random",
        "source": display_path(path),
        "seed": seed,
        "match_params": match,
        "sharing": sharing,
    }
    if match:
        genotype, draws = random_matched_genotype(
            space, names, table, target, rng, tolerance, max_draws, sharing
        )
        record.update(
            {"target_cell_params": target, "tolerance": tolerance, "max_draws": max_draws}
        )
    else:
        genotype, draws = sharing_draw(sharing)(space, names, rng), 1
    record["draws"] = draws
    return genotype, table, record


def derive_budget(path: str, budget: int):
    data, searched, table = load_search(path)
    probs = search_probs(data, searched, path)
    genotype, steps = derive_with_budget(
        probs, table, list(searched.domains), budget, start=searched
    )
    record = {
        "method": "param_budget",
        "source": display_path(path),
        "budget": budget,
        "searched_params": table.multimodel_count(searched),
        "smallest_possible_params": table.smallest_multimodel(),
        "steps": [s.to_dict() for s in steps],
    }
    return genotype, table, record


def derive_argmax(path: str):
    """The searched genotype itself (each domain's argmax cell), checked against its ``alpha``."""
    data, searched, table = load_search(path)
    search_probs(data, searched, path)
    return searched, table, {"method": "argmax", "source": display_path(path)}


# ---------------------------------------------------------------------------- perturbation
def resolve_checkpoint(search_out: str) -> str:
    """The checkpoint_last.pt of a search dir, or the given checkpoint file."""
    path = os.path.join(search_out, CHECKPOINT_FILE) if os.path.isdir(search_out) else search_out
    if path.endswith(".json"):
        raise DerivationError(
            f"{path}: --select perturbation needs the search checkpoint (the supernetwork's "
            f"weights), not a genotype file: give the search's save dir or its {CHECKPOINT_FILE}"
        )
    if not os.path.isfile(path):
        raise DerivationError(f"{path}: search checkpoint not found")
    return path


class CheckpointSupernet:
    """A search checkpoint's supernetwork as :func:`perturbation_select` needs it: ``heldout_loss``
    and ``finetune``, running the model with given mixing weights (:func:`mixing_override`)."""

    def __init__(
        self,
        path: str,
        data: Optional[str],
        subset: Optional[str],
        batches: int,
        lr: Optional[float],
        seed: int,
        cpu: bool,
    ):
        from fairseq import checkpoint_utils, optim, tasks  # the package registered its plugins

        logging.getLogger("fairseq").setLevel(logging.WARNING)  # one line per batch iterator

        from .models.searchable import unwrap_model

        try:
            state = checkpoint_utils.load_checkpoint_to_cpu(path, {"data": data} if data else None)
        except Exception as e:  # torch.load / omegaconf: the message says what is wrong
            raise DerivationError(f"{path}: cannot read the checkpoint: {e}") from None
        cfg = state.get("cfg")
        if cfg is None or "task" not in cfg or "model" not in cfg:
            raise DerivationError(f"{path}: not a fairseq checkpoint with a configuration")
        self.cfg = cfg
        heldout = cfg.task.get("heldout_subset", "heldout")
        self.subset = subset or heldout
        valid = {v.strip() for v in str(cfg.dataset.get("valid_subset") or "").split(",")}
        if self.subset.split(".")[0] in set(EVALUATION_SPLITS) | (valid - {""}):
            raise DerivationError(
                f"--perturb-subset {self.subset}: an evaluation split chooses no architecture (the "
                f"retrained model is judged on it); use the search's held-out split {heldout!r}"
            )
        task_data = getattr(cfg.task, "data", None)
        if task_data and not os.path.isdir(str(task_data).split(os.pathsep)[0]):
            raise DerivationError(
                f"{path}: the search's data directory {task_data} is not there; give it with --data DIR"
            )
        try:
            task = tasks.setup_task(cfg.task)
            model = task.build_model(cfg.model, from_checkpoint=True)
            model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
            criterion = task.build_criterion(cfg.criterion)
        except (KeyError, ValueError, RuntimeError, FileNotFoundError) as e:
            raise DerivationError(f"{path}: cannot rebuild the search's model: {e}") from None
        core = unwrap_model(model)
        if not getattr(core, "is_search", False):
            raise DerivationError(
                f"{path}: is the checkpoint of a derived model (built from --genotype), not of a search: "
                "perturbation selection needs the supernetwork"
            )
        self.alphas = core.network.alphas
        if self.alphas.num_frozen:
            raise DerivationError(
                f"{path}: is an extension's search (--extend-from): its old domains keep their cells; "
                "perturbation selection of an extension is not supported"
            )
        self.task, self.criterion = task, criterion
        self.device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
        self.model = model.float().to(self.device)
        self.space, self.names = core.search_space, list(core.architecture_names)
        self.table = core.param_table()
        architectures = core.network.architectures
        self.domains_of = [
            [d for d in range(len(architectures.domains)) if architectures.row(d) == row]
            for row in range(len(self.names))
        ]
        self.domain_names = list(architectures.domains)
        with torch.no_grad():
            self.probs = self.alphas.mixing_probs().detach().float().clone()
        self.seed = seed
        self.batches = {d: self._first_batches(d, batches) for d in range(len(self.domain_names))}
        self.train_batches: Dict[int, Iterator] = {}
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = optim.build_optimizer(cfg.optimizer, params)
        self.lr = float(lr) if lr is not None else float(cfg.optimization.lr[0])
        self.optimizer.set_lr(self.lr)
        self.clip = float(cfg.optimization.get("clip_norm", 0.0) or 0.0)

    def _epochs(self, split: str, domain: int) -> Iterator[dict]:
        """The batches of one domain's ``split``, epoch after epoch (shuffled, seeded)."""
        from fairseq import utils

        if split not in self.task.datasets:
            self.task.load_dataset(split)
        single = self.task.datasets[split].subset_of_domain(domain)
        itr = self.task.get_batch_iterator(
            dataset=single,
            max_tokens=self.cfg.dataset.max_tokens,
            max_sentences=self.cfg.dataset.batch_size,
            seed=self.seed + 1 + domain,
            disable_iterator_cache=True,
        )
        while True:
            got = False
            for batch in itr.next_epoch_itr(shuffle=True):
                if batch:
                    got = True
                    yield utils.move_to_cuda(batch) if self.device.type == "cuda" else batch
            if not got:
                raise DerivationError(
                    f"domain {self.domain_names[domain]!r}: subset {split}.{self.domain_names[domain]} has no batch"
                )

    def _first_batches(self, domain: int, count: int) -> List[dict]:
        """The held-out batches every loss is computed on: the same ones for every candidate."""
        return list(itertools.islice(self._epochs(self.subset, domain), count))

    def heldout_loss(self, row: int, weights: torch.Tensor) -> float:
        """Mean over the architecture's domains of their token-mean held-out cross-entropy."""
        mixing = self.probs.clone()
        mixing[row] = weights
        self.model.eval()
        means = []
        with torch.no_grad(), mixing_override(self.alphas, mixing):
            for d in self.domains_of[row]:
                total, size = 0.0, 0
                for sample in self.batches[d]:
                    out = self.criterion.compute(self.model, sample)
                    total, size = total + float(out.ce_sum), size + int(out.sample_size)
                means.append(total / max(size, 1))
        return sum(means) / len(means)

    def finetune(self, weights: torch.Tensor, steps: int) -> None:
        """``steps`` weight steps, each on one training batch of every domain (mean of their
        token-mean cross-entropies), the architectures mixing with ``weights``."""
        self.model.train()
        domains = range(len(self.domain_names))
        with mixing_override(self.alphas, weights):
            for _ in range(steps):
                self.optimizer.zero_grad()
                for d in domains:
                    if d not in self.train_batches:
                        self.train_batches[d] = self._epochs("train", d)
                    sample = next(self.train_batches[d])
                    loss = self.criterion.compute(self.model, sample).ce_mean / len(domains)
                    self.optimizer.backward(loss)
                if self.clip > 0:
                    self.optimizer.clip_grad_norm(self.clip)
                self.optimizer.step()


def derive_perturbation(
    search_out: str,
    data: Optional[str] = None,
    subset: Optional[str] = None,
    batches: int = PERTURB_BATCHES,
    finetune_steps: int = PERTURB_FINETUNE_STEPS,
    lr: Optional[float] = None,
    order: str = "random",
    seed: int = 0,
    cpu: bool = False,
):
    """Every architecture's genotype chosen by perturbation from a search checkpoint."""
    if batches < 1:
        raise DerivationError(f"--perturb-batches must be >= 1, got {batches}")
    if finetune_steps < 0:
        raise DerivationError(f"--perturb-finetune-steps must be >= 0, got {finetune_steps}")
    path = resolve_checkpoint(search_out)
    torch.manual_seed(seed)  # dropout of the fine-tune steps
    net = CheckpointSupernet(path, data, subset, batches, lr, seed, cpu)
    selection = perturbation_select(
        net.probs, net.space, net.names, net.heldout_loss, net.finetune, finetune_steps, order, seed
    )
    argmax = argmax_genotype(net.probs.double().cpu().numpy(), net.space, net.names)
    record = {
        "method": "perturbation",
        "source": display_path(path),
        "heldout_subset": net.subset,
        "batches_per_domain": batches,
        "finetune_subset": "train",
        "finetune_steps": finetune_steps,
        "finetune_lr": net.lr if finetune_steps else None,
        "order": order,
        "seed": seed,
        "differs_from_argmax": {
            n: selection.genotype.cells[n] != argmax.cells[n] for n in net.names
        },
    }
    record.update(selection.record())
    return selection.genotype, net.table, record


def write_derived(
    out: str,
    genotype: MultiDomainGenotype,
    table: ParamTable,
    record: Dict[str, Any],
    selection: Optional[str] = None,
) -> Dict[str, Any]:
    extra = {
        "param_counts": table.param_counts(genotype),
        "param_table": table.to_dict(),
    }
    if selection is not None:
        extra["selection"] = selection
    extra["derived_by"] = record
    save_genotype(out, genotype, extra)
    return extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdnas-derive",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Derive a genotype from a finished search: a random genotype (the chance baseline),\n"
        "the concordant multimodel within a parameter budget (both without the model or the data),\n"
        "the argmax genotype, or the genotype chosen by perturbation from the search checkpoint.\n"
        "Writes FILE in the search's genotype format with param_counts and derived_by.",
        epilog=BUDGET_RULE,
    )
    parser.add_argument(
        "search_out",
        metavar="SEARCH_OUT",
        help="a search's save dir or its genotype.json (--select perturbation: the save dir or a "
        "search checkpoint)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--random-seed",
        type=int,
        metavar="K",
        help="draw every domain's cell uniformly among the valid cells (numpy default_rng(K))",
    )
    mode.add_argument(
        "--param-budget",
        type=int,
        metavar="N",
        help="the multimodel with at most N parameters from the search's alphas (rule below)",
    )
    mode.add_argument(
        "--select",
        choices=("argmax", "perturbation"),
        help="argmax: the searched genotype (DARTS' argmax of every domain's alpha); perturbation: "
        "per edge, the operation whose removal from the trained supernetwork raises the domain's "
        "held-out loss most, then per node the inputs, with a short fine-tune between decisions "
        "(Wang et al., ICLR 2021; needs the checkpoint and the data)",
    )
    parser.add_argument(
        "--match-params",
        action="store_true",
        help="with --random-seed: redraw until the multimodel's cell parameters (those that depend "
        "on the genotype) are within --tolerance below the searched multimodel's, never above",
    )
    parser.add_argument(
        "--random-sharing",
        choices=tuple(SHARING),
        default=None,
        help="with --random-seed: independent (default): every domain's cell drawn on its own; "
        "copied: a copy rate q uniform in [0, 1], each later domain's node copied with probability q "
        "from an earlier domain, so that the draws cover multimodels whose domains agree (a search "
        "that shares every edge can only be matched this way)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help=f"relative tolerance of --match-params, below the target only ({MATCH_TOLERANCE})",
    )
    parser.add_argument(
        "--max-draws",
        type=int,
        default=None,
        help=f"draws --match-params may take ({MATCH_MAX_DRAWS})",
    )
    perturb = parser.add_argument_group("--select perturbation")
    perturb.add_argument(
        "--perturb-batches",
        type=int,
        default=None,
        metavar="B",
        help=f"held-out batches per domain every loss is computed on ({PERTURB_BATCHES})",
    )
    perturb.add_argument(
        "--perturb-finetune-steps",
        type=int,
        default=None,
        metavar="N",
        help="weight steps (one training batch of every domain each) between two decisions "
        f"({PERTURB_FINETUNE_STEPS}; 0: no fine-tune)",
    )
    perturb.add_argument(
        "--perturb-subset",
        default=None,
        metavar="SPLIT",
        help="the held-out split the losses are computed on (default: the search's --heldout-subset; "
        "valid and test are refused)",
    )
    perturb.add_argument(
        "--perturb-lr",
        type=float,
        default=None,
        help="learning rate of the fine-tune (default: the search's --lr)",
    )
    perturb.add_argument(
        "--perturb-order",
        choices=ORDERS,
        default=None,
        help="random: edges and nodes in a seeded random order (the paper's); fixed: the space's "
        "order (random)",
    )
    perturb.add_argument(
        "--perturb-seed", type=int, default=None, help="seed of the order and the batches (0)"
    )
    perturb.add_argument(
        "--data", default=None, metavar="DIR", help="the search's data-bin, if it has moved"
    )
    perturb.add_argument(
        "--cpu", action="store_true", help="run on the CPU even when a GPU is available"
    )
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="the genotype file to write (atomically)"
    )
    return parser


PERTURB_OPTIONS = (
    "perturb_batches",
    "perturb_finetune_steps",
    "perturb_subset",
    "perturb_lr",
    "perturb_order",
    "perturb_seed",
    "data",
    "cpu",
)


def _default(value, default):
    return default if value is None else value


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.random_seed is None and args.param_budget is None and args.select is None:
        parser.error("give one of --random-seed, --param-budget or --select")
    if args.match_params and args.random_seed is None:
        parser.error("--match-params needs --random-seed")
    if args.random_sharing is not None and args.random_seed is None:
        parser.error("--random-sharing needs --random-seed")
    if (args.tolerance is not None or args.max_draws is not None) and not args.match_params:
        parser.error("--tolerance and --max-draws need --match-params")
    given = [o for o in PERTURB_OPTIONS if getattr(args, o) not in (None, False)]
    if given and args.select != "perturbation":
        names = ", ".join("--" + o.replace("_", "-") for o in given)
        parser.error(f"{names} need(s) --select perturbation")
    tolerance = MATCH_TOLERANCE if args.tolerance is None else args.tolerance
    max_draws = MATCH_MAX_DRAWS if args.max_draws is None else args.max_draws
    selection = None
    try:
        if args.random_seed is not None:
            path = resolve_search_out(args.search_out)
            genotype, table, record = derive_random(
                path,
                args.random_seed,
                args.match_params,
                tolerance,
                max_draws,
                args.random_sharing or "independent",
            )
            how = f"random genotype, seed {args.random_seed}, {record['draws']} draw(s)"
        elif args.param_budget is not None:
            path = resolve_search_out(args.search_out)
            genotype, table, record = derive_budget(path, args.param_budget)
            how = f"budget {args.param_budget}, {len(record['steps'])} move(s) from the searched genotype"
        elif args.select == "argmax":
            selection = "argmax"
            genotype, table, record = derive_argmax(resolve_search_out(args.search_out))
            how = "argmax genotype of the search"
        else:
            selection = "perturbation"
            genotype, table, record = derive_perturbation(
                args.search_out,
                data=args.data,
                subset=args.perturb_subset,
                batches=_default(args.perturb_batches, PERTURB_BATCHES),
                finetune_steps=_default(args.perturb_finetune_steps, PERTURB_FINETUNE_STEPS),
                lr=args.perturb_lr,
                order=_default(args.perturb_order, "random"),
                seed=_default(args.perturb_seed, 0),
                cpu=args.cpu,
            )
            differ = [n for n, d in record["differs_from_argmax"].items() if d]
            how = (
                f"perturbation selection on {record['heldout_subset']}, {record['finetunes']} "
                f"fine-tune(s) of {record['finetune_steps']} step(s); differs from argmax for "
                f"{', '.join(differ) if differ else 'no domain'}"
            )
        extra = write_derived(args.out, genotype, table, record, selection)
    except (GenotypeError, DerivationError, SelectionError, OSError) as e:
        print(f"mdnas-derive: error: {e}", file=sys.stderr)
        return 1
    counts = extra["param_counts"]
    print(
        f"{args.out}: {how}; multimodel {counts['multimodel']} parameters, "
        f"{counts['multimodel_cells']} in its cells"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
