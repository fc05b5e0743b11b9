"""The multi-domain DARTS search core: pure PyTorch, no fairseq import.

Public API:
    SearchSpace, darts_rnn_space, darts_cnn_space,
    transformer_lm_space                                     -- cell shapes
    ArchitectureParameters, mix, annealed_temperature        -- per-domain alpha (D, E, K), mixed op
    architecture_logits, architecture_parameters             -- alpha as read (masked) / as optimized (raw)
    js_structural_loss, batch_hard_triplet_loss              -- the two regularizers
    BilevelArchitect, HESSIAN_DIFFERENCES                    -- first / second order alpha step
    VirtualStep, SGDVirtualStep, NAGVirtualStep, AdamVirtualStep -- the weight optimizer's rule (second order)
    DomainSampler                                            -- the domain distribution p, fixed or robust
    derive_genotype, MultiDomainGenotype, multimodel_param_count,
    save_genotype, load_genotype, GenotypeError,
    check_extension                                          -- genotypes and their files
    ParamTable, ParamPenalty, DerivationError                -- parameter counts without the model
    random_genotype, random_copied_genotype, random_matched_genotype -- the chance baseline
    derive_with_budget, budget_sequence, BUDGET_RULE         -- a parameter budget from one search
    edge_entropy, edge_margin, decisiveness                  -- how decided a search is
"""

from .alpha import (
    MASKED_LOGIT,
    ArchitectureParameters,
    alphas_trainable,
    annealed_temperature,
    architecture_logits,
    architecture_parameters,
    mix,
    weight_parameters,
)
from .architect import HESSIAN_DIFFERENCES, BilevelArchitect
from .architectures import DomainArchitectures
from .atomic import atomic_path, atomic_write_text
from .budget import BUDGET_RULE, BudgetStep, argmax_genotype, budget_sequence, derive_with_budget
from .decisiveness import decisiveness, edge_entropy, edge_margin
from .domains import DomainSampler
from .genotype import (
    GENOTYPE_FORMAT,
    GENOTYPE_VERSION,
    GenotypeEdge,
    GenotypeError,
    MultiDomainGenotype,
    check_compatible,
    check_extension,
    derive_cell,
    derive_genotype,
    genotype_from_dict,
    load_genotype,
    multimodel_param_count,
    read_genotype_json,
    save_genotype,
)
from .params import DerivationError, ParamPenalty, ParamTable, param_penalty, uniform_param_table
from .random_genotypes import (
    SHARING,
    random_cell,
    random_copied_genotype,
    random_genotype,
    random_matched_genotype,
)
from .regularizers import batch_hard_triplet_loss, js_structural_loss, pairwise_euclidean
from .space import (
    CNN_OPERATIONS,
    RNN_OPERATIONS,
    TRANSFORMER_CHANNEL_OPS,
    SearchSpace,
    darts_cnn_space,
    darts_rnn_space,
    transformer_lm_space,
    transformer_token_ops,
)
from .virtual_step import AdamVirtualStep, NAGVirtualStep, SGDVirtualStep, VirtualStep

__all__ = [name for name in dir() if not name.startswith("_")]
