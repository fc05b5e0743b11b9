"""Importing the plugin registers the task, models and criterion exactly once."""

import importlib
import subprocess
import sys

from tests.helpers.fairseq_runs import ROOT, USER_DIR


def test_import_twice_and_reload_keep_one_registration():
    from fairseq.criterions import CRITERION_REGISTRY
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    import mdnas_fairseq

    task_cls = TASK_REGISTRY["multidomain_nas"]
    importlib.reload(mdnas_fairseq.tasks.multidomain_nas)
    importlib.reload(mdnas_fairseq.models.mdnas_rnn)
    importlib.reload(mdnas_fairseq.criterions.multidomain_nas_loss)
    import mdnas_fairseq as again  # noqa: F401

    assert TASK_REGISTRY["multidomain_nas"] is task_cls
    for name in ("mdnas_rnn", "mdnas_rnn_tiny", "mdnas_rnn_small", "mdnas_rnn_base", "mdnas_conv"):
        assert name in ARCH_MODEL_REGISTRY
    assert "multidomain_nas_loss" in CRITERION_REGISTRY and "rotated_mnist_nas" in TASK_REGISTRY


def test_user_dir_import_after_package_import():
    """fairseq's --user-dir import of the same package (already imported) is accepted."""
    code = (
        "import mdnas_fairseq, argparse\n"
        "from fairseq import utils\n"
        f"utils.import_user_module(argparse.Namespace(user_dir={USER_DIR!r}))\n"
        f"utils.import_user_module(argparse.Namespace(user_dir={USER_DIR!r}))\n"
        "from fairseq.tasks import TASK_REGISTRY; print('multidomain_nas' in TASK_REGISTRY)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("True")
