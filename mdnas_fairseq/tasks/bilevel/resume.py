"""Reading the task state back from the checkpoint that ``fairseq-train`` resumes from.

fairseq's trainer restores model, optimizer and iterator but not the task state (the alpha
optimizer, the fp16 alpha-step loss scale and its window counter, p, the held-out iterators), so
the task reads it itself, from the file fairseq chose (``--restore-file``, by default
``<save-dir>/checkpoint_last.pt``), unless ``--reset-optimizer``.
"""

import logging
import os
from typing import Optional

logger = logging.getLogger(__name__)


def checkpoint_to_resume(cfg) -> Optional[str]:
    if cfg.reset_optimizer:
        return None
    restore = cfg.restore_file or "checkpoint_last.pt"
    path = os.path.join(cfg.save_dir, restore) if restore == "checkpoint_last.pt" else restore
    return path if os.path.isfile(path) else None


def saved_task_state(cfg) -> Optional[dict]:
    path = checkpoint_to_resume(cfg)
    if path is None:
        return None
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(path).get("task_state")
    if state:
        logger.info(
            f"restoring alpha optimizer, alpha-step loss scale, p and search iterators from {path}"
        )
    return state or None
