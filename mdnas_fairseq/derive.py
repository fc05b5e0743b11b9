"""``mdnas-derive``: new genotypes from a finished search, without the model or the data.

    mdnas-derive SEARCH_OUT --random-seed K [--match-params [--tolerance 0.02] [--max-draws M]] --out FILE
    mdnas-derive SEARCH_OUT --param-budget N --out FILE

SEARCH_OUT is a search's save dir (its ``genotype.json``) or a genotype.json. It must hold the
fields a search writes: ``search_space``, ``domains``, ``cells``, ``param_table`` (parameter counts
of the modules) and, for ``--param-budget``, ``alpha`` (softmax(alpha) per domain). FILE is a
genotype file in the format a search writes, with ``param_counts`` (every domain alone, the
multimodel and its cell modules alone), ``param_table`` and ``derived_by`` (how it was made: the seed and the number of
draws, or the budget and every move taken). Imports only the search core and numpy/torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

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
    random_genotype,
    random_matched_genotype,
)

GENOTYPE_FILE = "genotype.json"
ROW_SUM_TOLERANCE = 1e-3


def resolve_search_out(search_out: str) -> str:
    """The genotype.json of a search dir, or the given file."""
    if os.path.isdir(search_out):
        return os.path.join(search_out, GENOTYPE_FILE)
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
):
    """Every domain's genotype drawn at random (``seed``) in the search's space; with ``match``,
    redrawn until the multimodel's cell parameters are within ``tolerance`` below the search's
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
    }
    if match:
        genotype, draws = random_matched_genotype(
            space, names, table, target, rng, tolerance, max_draws
        )
        record.update(
            {"target_cell_params": target, "tolerance": tolerance, "max_draws": max_draws}
        )
    else:
        genotype, draws = random_genotype(space, names, rng), 1
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


def write_derived(
    out: str, genotype: MultiDomainGenotype, table: ParamTable, record: Dict[str, Any]
) -> Dict[str, Any]:
    extra = {
        "param_counts": table.param_counts(genotype),
        "param_table": table.to_dict(),
        "derived_by": record,
    }
    save_genotype(out, genotype, extra)
    return extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdnas-derive",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Derive a genotype from a finished search without the model or the data: a random\n"
        "genotype (the chance baseline) or the concordant multimodel within a parameter budget.\n"
        "Writes FILE in the search's genotype format with param_counts and derived_by.",
        epilog=BUDGET_RULE,
    )
    parser.add_argument(
        "search_out", metavar="SEARCH_OUT", help="a search's save dir or its genotype.json"
    )
    mode = parser.add_mutually_exclusive_group(required=True)
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
    parser.add_argument(
        "--match-params",
        action="store_true",
        help="with --random-seed: redraw until the multimodel's cell parameters (those that depend "
        "on the genotype) are within --tolerance below the searched multimodel's, never above",
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
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="the genotype file to write (atomically)"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.match_params and args.random_seed is None:
        parser.error("--match-params needs --random-seed")
    if (args.tolerance is not None or args.max_draws is not None) and not args.match_params:
        parser.error("--tolerance and --max-draws need --match-params")
    tolerance = MATCH_TOLERANCE if args.tolerance is None else args.tolerance
    max_draws = MATCH_MAX_DRAWS if args.max_draws is None else args.max_draws
    path = resolve_search_out(args.search_out)
    try:
        if args.random_seed is not None:
            genotype, table, record = derive_random(
                path, args.random_seed, args.match_params, tolerance, max_draws
            )
            how = f"random genotype, seed {args.random_seed}, {record['draws']} draw(s)"
        else:
            genotype, table, record = derive_budget(path, args.param_budget)
            how = f"budget {args.param_budget}, {len(record['steps'])} move(s) from the searched genotype"
        extra = write_derived(args.out, genotype, table, record)
    except (GenotypeError, DerivationError, OSError) as e:
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
