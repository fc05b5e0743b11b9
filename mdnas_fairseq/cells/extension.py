"""Extending a trained network to more domains, the old ones untouched (pure PyTorch).

The extended network is built with everything the old one had, under the same names and shapes,
plus what the new domains need: alpha rows of their own (search), the dictionary block their data
appended (:mod:`.vocabulary`), and in a derived multimodel the modules only they chose.
:func:`extend_network` copies every tensor of the old network's state into it and freezes what it
copied: a frozen tensor is a separate parameter whose ``requires_grad`` is False, so no optimizer
is built over it (fairseq's trainer takes the parameters that require gradients): neither
gradients, nor decoupled weight decay, nor fp32 master copies move it. The old alpha rows go to
the frozen rows of :class:`~mdnas_fairseq.search.ArchitectureParameters`, out of the tensor the
alpha optimizer holds. What remains trainable is exactly what no old domain uses.

An old domain's forward pass then computes what the old network computed, operation for
operation on the same tensors (the only additions are the appended logits, ``-inf`` for it), so
its outputs are bitwise the old ones.

With ``train_shared`` the copied weights stay trainable (the old domains then change); the old
alpha rows stay frozen either way, so the old domains' genotype cells do not move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..search import ArchitectureParameters


class ExtensionError(ValueError):
    """The old network's state does not fit the extended network; the message names the tensor."""


@dataclass
class ExtensionReport:
    """What :func:`extend_network` did: the names of the tensors it froze and of those left to train."""

    frozen: List[str] = field(default_factory=list)
    trained: List[str] = field(default_factory=list)
    frozen_params: int = 0
    trained_params: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.frozen)} old tensors frozen ({self.frozen_params} parameters), "
            f"{len(self.trained)} trained ({self.trained_params} parameters)"
        )


def extend_network(
    network: nn.Module,
    old_state: Dict[str, Tensor],
    init_from: Optional[int] = None,
    train_shared: bool = False,
) -> ExtensionReport:
    """Copy the old network's state ``old_state`` (its ``state_dict()``) into the extended
    ``network`` and freeze what was copied (module docstring).

    Args:
        network: the extended network (its frozen alpha rows as many as the old network's rows).
        old_state: the old network's state dict; every entry must have a place in ``network``.
        init_from: search: start the new alpha rows as a copy of this old row (default: 0, uniform).
        train_shared: leave the copied weights trainable (the old alpha rows stay frozen).
    """
    params = dict(network.named_parameters())
    state = network.state_dict(keep_vars=True)
    done = set()
    report = ExtensionReport()
    for prefix, module in network.named_modules():
        if isinstance(module, ArchitectureParameters):
            prefix = f"{prefix}." if prefix else ""
            if prefix + "alpha" not in old_state:
                raise ExtensionError(
                    "the old network has no architecture parameters (alpha): a search is extended "
                    "from a search checkpoint"
                )
            old_rows = ArchitectureParameters.rows_in_state(old_state, prefix).float()
            if old_rows.shape[0] != module.num_frozen:
                raise ExtensionError(
                    f"the old network has {old_rows.shape[0]} architectures, the extended one keeps "
                    f"{module.num_frozen} frozen rows"
                )
            if init_from is not None and not 0 <= init_from < module.num_frozen:
                raise ExtensionError(
                    f"init_from {init_from}: not one of the {module.num_frozen} old architectures"
                )
            try:
                module.extend(old_rows, init_from)
            except ValueError as e:
                raise ExtensionError(f"{prefix}alpha: {e}") from None
            done.update({prefix + "alpha", prefix + "frozen_alpha"})
            report.frozen.append(prefix + "frozen_alpha")
            report.frozen_params += module.frozen_alpha.numel()
            report.trained.append(prefix + "alpha")
            report.trained_params += module.alpha.numel()
    with torch.no_grad():
        for name, value in old_state.items():
            if name in done:
                continue
            if name not in state:
                raise ExtensionError(
                    f"the old network's {name!r} has no place in the extended network (a module an "
                    "old domain uses is missing: was its architecture changed?)"
                )
            target = state[name]
            if tuple(target.shape) != tuple(value.shape):
                raise ExtensionError(
                    f"{name!r} has shape {tuple(value.shape)} in the old network and "
                    f"{tuple(target.shape)} in the extended one: build it with the old model's options"
                )
            target.copy_(value)
            done.add(name)
            if name in params:
                params[name].requires_grad_(train_shared)
                (report.trained if train_shared else report.frozen).append(name)
                if train_shared:
                    report.trained_params += value.numel()
                else:
                    report.frozen_params += value.numel()
    for name, p in params.items():
        if name not in done:
            p.requires_grad_(True)
            report.trained.append(name)
            report.trained_params += p.numel()
    return report
