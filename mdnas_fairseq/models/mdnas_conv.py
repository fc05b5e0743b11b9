"""fairseq model ``mdnas_conv``: an image classifier over one DARTS conv cell.

Thin glue over :class:`mdnas_fairseq.cells.conv.DartsConvClassifier`:

* without ``--genotype`` it is the search model (per-domain alpha over all candidates);
* with ``--genotype FILE`` it is the derived concordant multimodel of that genotype (the genotype
  is embedded in the checkpoint's config as ``genotype_data``, so evaluation needs no file);
* ``--shared-architecture`` gives the "single model on the union of domains" baseline.

Named sizes: ``mdnas_conv`` (seed: one 4-node cell, 16 channels; stem stride 2 and max pool 2,
so the cell runs at 7x7), ``mdnas_conv_tiny`` (tests).
"""

import logging
from dataclasses import dataclass, field

import torch
from fairseq.models import (
    ARCH_MODEL_REGISTRY,
    MODEL_REGISTRY,
    BaseFairseqModel,
    register_model,
    register_model_architecture,
)
from fairseq.utils import safe_getattr

from ..cells.conv import DartsConvClassifier
from ..registry import register_once
from ..search import darts_cnn_space
from .searchable import ArchitectureConfig, SearchableModel, genotype_for_model

logger = logging.getLogger(__name__)


@dataclass
class MDNASConvConfig(ArchitectureConfig):
    channels: int = field(default=16, metadata={"help": "channels C of the cell"})
    num_nodes: int = field(
        default=4, metadata={"help": "intermediate nodes of the DARTS conv cell"}
    )
    stem_stride: int = field(default=2, metadata={"help": "stride of the 3x3 stem convolution"})
    stem_pool: int = field(
        default=2, metadata={"help": "max-pooling factor after the stem (1: none)"}
    )
    num_classes: int = field(default=10, metadata={"help": "classes"})
    dropout: float = field(default=0.0, metadata={"help": "dropout before the classifier"})


class MDNASConvModel(SearchableModel, BaseFairseqModel):
    def __init__(self, net: DartsConvClassifier, cfg):
        super().__init__()
        self.net = net
        self.cfg = cfg

    @classmethod
    def build_model(cls, cfg, task):
        domains = list(task.domain_names)
        genotype = genotype_for_model(cfg, domains, darts_cnn_space(cfg.num_nodes))
        net = DartsConvClassifier(
            domains,
            channels=cfg.channels,
            num_nodes=cfg.num_nodes,
            num_classes=cfg.num_classes,
            stem_stride=cfg.stem_stride,
            stem_pool=cfg.stem_pool,
            genotype=genotype,
            shared_architecture=cfg.shared_architecture,
            dropout=cfg.dropout,
            alpha_init_scale=cfg.alpha_init_scale,
        )
        model = cls(net, cfg)
        if genotype is not None:
            logger.info(
                f"derived multimodel: {sum(p.numel() for p in model.parameters())} parameters "
                f"(genotype count {net.genotype_param_count(genotype)})"
            )
        return model

    def forward(self, images, domain=None, batch_domain=None, **kwargs):
        if domain is None:
            raise ValueError(
                "mdnas_conv needs the domain of every image (net_input['domain']); "
                "load the data with --task rotated_mnist_nas"
            )
        logits, features = self.net(images, domain.to(images.device), batch_domain)
        return logits, {"features": features}

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        logits = net_output[0].float()
        return torch.log_softmax(logits, dim=-1) if log_probs else torch.softmax(logits, dim=-1)

    def get_targets(self, sample, net_output):
        return sample["target"]

    def max_positions(self):
        return None

    # ------------------------------------------------------------------ search API used by task / criterion
    @property
    def network(self) -> DartsConvClassifier:
        return self.net

    def domain_representation(self, net_output, sample):
        """The globally pooled cell output of each image."""
        return net_output[1]["features"]


def mdnas_conv_base(args):
    args.channels = safe_getattr(args, "channels", 16)
    args.num_nodes = safe_getattr(args, "num_nodes", 4)
    args.stem_stride = safe_getattr(args, "stem_stride", 2)
    args.stem_pool = safe_getattr(args, "stem_pool", 2)


def mdnas_conv_tiny(args):
    args.channels = safe_getattr(args, "channels", 4)
    args.num_nodes = safe_getattr(args, "num_nodes", 2)
    args.stem_stride = safe_getattr(args, "stem_stride", 2)
    args.stem_pool = safe_getattr(args, "stem_pool", 2)


register_once(
    MODEL_REGISTRY,
    "mdnas_conv",
    lambda: register_model("mdnas_conv", dataclass=MDNASConvConfig)(MDNASConvModel),
)
for _preset in (mdnas_conv_base, mdnas_conv_tiny):
    register_once(
        ARCH_MODEL_REGISTRY,
        _preset.__name__,
        lambda p=_preset: register_model_architecture("mdnas_conv", p.__name__)(p),
    )
