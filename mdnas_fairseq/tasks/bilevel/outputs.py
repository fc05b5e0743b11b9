"""What a search writes into its save dir (master worker only): ``genotype.json``,
``genotypes/genotype_epoch{N}.json``, ``alpha_history.jsonl`` and ``heatmaps/alpha_<name>_epoch{N}.png``."""

import json
import logging
import os
from typing import Dict, Optional

import torch
from fairseq import metrics

from ...search import architecture_logits, atomic_write_text, derive_genotype, save_genotype

logger = logging.getLogger(__name__)


def latest_metrics() -> Dict[str, float]:
    out: Dict[str, float] = {}
    for agg in ("train", "valid"):
        try:
            values = metrics.get_smoothed_values(agg)
        except Exception:  # aggregator not created yet
            continue
        for k, v in values.items():
            if torch.is_tensor(v) and v.numel() == 1:
                v = v.item()
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{agg}_{k}"] = float(v)
    return out


def append_history(path: str, record: dict) -> None:
    """Add (or replace) the record of its epoch in the JSON-lines history, atomically."""
    entries = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            entries = [json.loads(line) for line in f if line.strip()]
    entries = [e for e in entries if e.get("epoch") != record["epoch"]]
    entries.append(record)
    entries.sort(key=lambda e: e["epoch"])
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in entries))


def write_search_outputs(
    core,
    save_dir: str,
    epoch: int,
    settings: dict,
    heatmaps: bool = True,
    fixed_cells: Optional[Dict[str, tuple]] = None,
) -> Optional[str]:
    """Derive the genotype of ``core``'s alpha and write the files; returns genotype.json's path.

    ``fixed_cells`` (an extension): the old architectures' cells, which must not have moved (their
    alpha rows are frozen): a different cell is a bug, raised before anything is written."""
    alpha = architecture_logits(core)[0].detach().float().cpu()  # disallowed ops masked
    genotype = derive_genotype(alpha, core.search_space, core.architecture_names)
    moved = [name for name, cell in (fixed_cells or {}).items() if genotype.cells[name] != cell]
    if moved:
        raise RuntimeError(
            f"bug: the frozen architecture of old domain(s) {moved} changed during the extension "
            "(their alpha rows must never move)"
        )
    probs = torch.softmax(alpha.double(), dim=-1)
    table = core.network.param_table()
    extra = {
        "epoch": int(epoch),
        "alpha": {name: probs[k].tolist() for k, name in enumerate(core.architecture_names)},
        "param_counts": table.param_counts(genotype),
        "param_table": table.to_dict(),
        "metrics": latest_metrics(),
        "settings": settings,
    }
    path = os.path.join(save_dir, "genotype.json")
    save_genotype(
        os.path.join(save_dir, "genotypes", f"genotype_epoch{epoch}.json"), genotype, extra
    )
    save_genotype(path, genotype, extra)
    append_history(
        os.path.join(save_dir, "alpha_history.jsonl"),
        {"epoch": extra["epoch"], "alpha": extra["alpha"], "metrics": extra["metrics"]},
    )
    if heatmaps:
        from ...viz.heatmap import save_alpha_heatmaps

        save_alpha_heatmaps(
            probs,
            core.search_space,
            core.architecture_names,
            os.path.join(save_dir, "heatmaps"),
            epoch=epoch,
        )
    logger.info(
        f"epoch {epoch}: genotype written to {path}; multimodel parameters "
        f"{extra['param_counts']['multimodel']}"
    )
    return path
