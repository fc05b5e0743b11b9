"""Run ``fairseq-train`` in this process with the alpha step's fp16 loss-scale factor starting at
``ALPHA_SCALE_FACTOR`` (a test helper: a huge factor makes the first alpha gradients overflow, as a
huge ``--fp16-init-scale`` would, but for the alpha step only, since on a CPU fairseq's own
overflow handler calls CUDA). A resumed run starts from the same factor and then loads what the
checkpoint holds.

Usage: python tests/helpers/fp16_alpha_scale.py OUT_JSON <fairseq-train arguments>

Writes OUT_JSON: {"factor": the factor at the end, "factors": [the factor after each alpha step]}.
"""

import json
import os
import sys

OUT = sys.argv[1]
sys.argv = ["fairseq-train"] + sys.argv[2:]

import fairseq_cli.train as train_cli  # noqa: E402

import mdnas_fairseq  # noqa: E402,F401
from mdnas_fairseq.tasks.bilevel import mixin, step  # noqa: E402

FACTOR = float(os.environ["ALPHA_SCALE_FACTOR"])
states = []
factors = []
original_init = mixin.SearchState.__init__


def init(self, host, num_domains):
    original_init(self, host, num_domains)
    self.alpha_scale_factor = FACTOR
    states.append(self)


mixin.SearchState.__init__ = init
original_alpha_step = step.alpha_step


def alpha_step(host, *args, **kwargs):
    out = original_alpha_step(host, *args, **kwargs)
    factors.append(host.search.alpha_scale_factor)
    return out


step.alpha_step = alpha_step
train_cli.cli_main()
with open(OUT, "w") as f:
    json.dump({"factor": states[-1].alpha_scale_factor, "factors": factors}, f)
