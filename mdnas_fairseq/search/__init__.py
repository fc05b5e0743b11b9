"""The multi-domain DARTS search core: pure PyTorch, no fairseq import.

Public API:
    SearchSpace, darts_rnn_space, darts_cnn_space,
    transformer_lm_space                                     -- cell shapes
    ArchitectureParameters, mix, annealed_temperature        -- per-domain alpha (D, E, K), mixed op
    js_structural_loss, batch_hard_triplet_loss              -- the two regularizers
    BilevelArchitect                                         -- first / second order architecture step
    DomainSampler                                            -- fixed or robust domain distribution p
    derive_genotype, MultiDomainGenotype, multimodel_param_count,
    save_genotype, load_genotype, GenotypeError              -- genotypes and their files
"""
from .arch_params import (
    MASKED_LOGIT,
    ArchitectureParameters,
    alphas_trainable,
    annealed_temperature,
    architecture_parameters,
    mix,
    search_architecture,
    weight_parameters,
)
from .architect import BilevelArchitect
from .atomic import atomic_path, atomic_write_text
from .domains import DomainSampler
from .genotype import (
    GENOTYPE_FORMAT,
    GENOTYPE_VERSION,
    GenotypeEdge,
    GenotypeError,
    MultiDomainGenotype,
    check_compatible,
    derive_cell,
    derive_genotype,
    genotype_from_dict,
    load_genotype,
    multimodel_param_count,
    read_genotype_json,
    save_genotype,
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

__all__ = [name for name in dir() if not name.startswith("_")]
