"""The options of the bilevel search, shared by the language and the vision task, validated once."""

from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ...search import HESSIAN_DIFFERENCES

EVALUATION_SPLITS = ("valid", "test")


@dataclass
class BilevelSearchConfig(FairseqDataclass):
    domains: str = field(default="", metadata={"help": "comma-separated domain names, e.g. en,de"})
    heldout_subset: str = field(
        default="heldout",
        metadata={
            "help": "held-out part of the training data used by the alpha step (never valid/test)"
        },
    )
    alpha_order: int = field(
        default=1,
        metadata={
            "help": "alpha step: 1 first order, 2 DARTS second order (its virtual step is one step "
            "of the weight optimizer's own rule: sgd, nag or adam, after --clip-norm as the real "
            "step clips)"
        },
    )
    alpha_hessian_difference: ChoiceEnum(list(HESSIAN_DIFFERENCES)) = field(
        default="central",
        metadata={
            "help": "second order's Hessian-vector product: central difference (DARTS, two extra "
            "training passes, error O(eps^2)) or forward difference (one extra pass, reusing the "
            "virtual step's own alpha gradient, error O(eps))"
        },
    )
    alpha_lr: float = field(
        default=0.1,
        metadata={
            "help": "learning rate of the alpha optimizer (Adam); DARTS' 3e-4 leaves a short search "
            "undecided (results/decisive_lm.md, decisive_vision.md)"
        },
    )
    alpha_betas: List[float] = field(
        default_factory=lambda: [0.5, 0.999],
        metadata={"help": "Adam betas of the alpha optimizer, e.g. 0.5,0.999"},
    )
    alpha_weight_decay: float = field(
        default=1e-3, metadata={"help": "weight decay of the alpha optimizer"}
    )
    alpha_start_update: int = field(
        default=0, metadata={"help": "first update that takes an alpha step"}
    )
    domain_probs: Optional[List[float]] = field(
        default=None,
        metadata={"help": "fixed domain probabilities p, e.g. 0.7,0.3 (default: uniform)"},
    )
    eta_p: float = field(
        default=0.0,
        metadata={
            "help": "robust p = softmax(eta_p * per-domain held-out cross-entropy); 0 keeps p"
        },
    )
    no_alpha_heatmaps: bool = field(
        default=False, metadata={"help": "do not save softmax(alpha) heatmaps every epoch"}
    )
    save_dir: str = II("checkpoint.save_dir")
    restore_file: str = II("checkpoint.restore_file")
    reset_optimizer: bool = II("checkpoint.reset_optimizer")
    max_tokens: Optional[int] = II("dataset.max_tokens")
    clip_norm: float = II("optimization.clip_norm")  # the virtual step clips as the real step
    valid_subset: str = II("dataset.valid_subset")
    fp16: bool = II("common.fp16")
    memory_efficient_fp16: bool = II("common.memory_efficient_fp16")
    distributed_world_size: int = II("distributed_training.distributed_world_size")
    ddp_backend: str = II("distributed_training.ddp_backend")
    find_unused_parameters: bool = II("distributed_training.find_unused_parameters")


def parse_domains(spec: str) -> List[str]:
    domains = [d.strip() for d in (spec or "").split(",") if d.strip()]
    if not domains:
        raise ValueError(
            "--domains is required: a comma-separated list of domain names, e.g. --domains en,de"
        )
    if len(set(domains)) != len(domains):
        raise ValueError(f"--domains lists a domain twice: {spec}")
    return domains


def validate(cfg, num_domains: int) -> None:
    """Reject inconsistent search options with a message naming the flag."""
    if cfg.alpha_order not in (1, 2):
        raise ValueError(f"--alpha-order must be 1 or 2, got {cfg.alpha_order}")
    betas = list(cfg.alpha_betas)
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(
            f"--alpha-betas must be two numbers in [0, 1), e.g. 0.5,0.999; got {betas}"
        )
    if cfg.domain_probs is not None and len(cfg.domain_probs) not in (0, num_domains):
        raise ValueError(
            f"--domain-probs gives {len(cfg.domain_probs)} values for {num_domains} domains"
        )
    evaluation = set(EVALUATION_SPLITS) | {
        s.strip() for s in str(cfg.valid_subset or "").split(",") if s.strip()
    }
    if cfg.heldout_subset.split(".")[0] in evaluation:
        raise ValueError(
            f"--heldout-subset {cfg.heldout_subset!r} is an evaluation split ({', '.join(sorted(evaluation))}): the "
            "alpha step must use a held-out part of the training data (default: heldout)"
        )
    if cfg.alpha_order == 2 and (cfg.fp16 or cfg.memory_efficient_fp16):
        raise ValueError(
            "--alpha-order 2 cannot run with --fp16: the finite-difference Hessian-vector product moves the "
            "weights by 0.01 / ||u||, which half precision rounds away; use --alpha-order 1 with --fp16, "
            "or second order in fp32"
        )
