#!/usr/bin/env python3
"""BLEU and chrF per domain of a translation checkpoint (``--task multidomain_nas_translation``),
with sacrebleu on detokenised text, the signatures printed.

For every domain (``--domains``, default: all of the checkpoint's) the split ``--split`` of the
data-bin is translated with fairseq's beam search (``task.inference_step``, as fairseq-generate
does), the sentencepiece pieces are joined back into text (fairseq's ``--remove-bpe
sentencepiece``), and the hypotheses are scored against the untokenised references that
``mdnas-prepare --translation`` kept in ``DATA/../raw/{split}.{domain}.SRC-TGT.TGT``.

example:
  python scripts/score_translation.py build/gettext-mt/data-bin --path runs/mt/checkpoint_best.pt \\
      --beam 5 --out runs/mt/scores.json

prints one line per domain (BLEU, chrF, sentences), then the two sacrebleu signatures;
--hypotheses-dir keeps the hypotheses ({split}.{domain}.hyp, line i for reference line i); --out
writes the same as JSON: {"domains": {d: {"bleu": .., "chrf": .., "sentences": ..}},
"signatures": {"bleu": .., "chrf": ..}, "checkpoint", "split", "beam"}.
"""

import argparse
import json
import os
import sys
import warnings
from argparse import Namespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout
warnings.filterwarnings(
    "ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning
)


def references(data_bin, split, domain, meta):
    """The untokenised target side of ``split`` of ``domain`` (line i = sentence id i)."""
    name = f"{split}.{domain}.{meta['source_lang']}-{meta['target_lang']}.{meta['target_lang']}"
    path = os.path.join(os.path.dirname(os.path.abspath(data_bin)), "raw", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no references (the raw/ folder mdnas-prepare --translation writes next to "
            "data-bin/)"
        )
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def translate(task, models, generator, subset, batch_size, cuda):
    """{line of the domain's split: detokenised best hypothesis} of a loaded subset (our task
    numbers a domain's lines by ``local_ids``, fairseq's translation task a one-domain subset's by
    ``id``)."""
    import torch
    from fairseq import utils

    itr = task.get_batch_iterator(
        dataset=task.dataset(subset),
        max_sentences=batch_size,
        max_positions=utils.resolve_max_positions(
            task.max_positions(), *[m.max_positions() for m in models]
        ),
    ).next_epoch_itr(shuffle=False)
    out = {}
    for sample in itr:
        if cuda:
            sample = utils.move_to_cuda(sample)
        with torch.no_grad():
            hypos = task.inference_step(generator, models, sample)
        for i, sid in enumerate(sample.get("local_ids", sample["id"]).tolist()):
            tokens = hypos[i][0]["tokens"].int().cpu()
            out[sid] = task.target_dictionary.string(tokens, "sentencepiece")
    return out


def score(hypotheses, refs):
    """(BLEU, chrF, their signatures) of sacrebleu's corpus scores."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    return (
        bleu.corpus_score(hypotheses, [refs]).score,
        chrf.corpus_score(hypotheses, [refs]).score,
        str(bleu.get_signature()),
        str(chrf.get_signature()),
    )


def main(argv=None):
    description, _, epilog = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(
        description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("data", help="the data-bin made by mdnas-prepare --translation")
    p.add_argument("--path", required=True, help="checkpoint of --task multidomain_nas_translation")
    p.add_argument("--split", default="test", help="split to translate (default test)")
    p.add_argument("--domains", default=None, help="comma-separated domains (default: all)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--lenpen", type=float, default=1.0)
    p.add_argument("--max-len-a", type=float, default=0.0)
    p.add_argument("--max-len-b", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cpu", action="store_true", help="do not use a GPU")
    p.add_argument("--out", default=None, help="write the scores as JSON here")
    p.add_argument(
        "--hypotheses-dir",
        default=None,
        help="write each domain's detokenised hypotheses there, {split}.{domain}.hyp, line i "
        "translating line i of the references (to rerun sacrebleu by hand)",
    )
    args = p.parse_args(argv)

    import torch
    from fairseq import checkpoint_utils

    import mdnas_fairseq  # noqa: F401  (registers the task and the model)
    from mdnas_fairseq.tasks.multidomain_nas_translation import translation_metadata

    meta = translation_metadata(args.data)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.path], arg_overrides={"data": args.data}
    )
    cuda = torch.cuda.is_available() and not args.cpu
    for m in models:
        m.eval()
        if cuda:
            m.cuda()
    domains = args.domains.split(",") if args.domains else list(task.domain_names)
    unknown = [d for d in domains if d not in task.domain_names]
    if unknown:
        p.error(f"--domains {unknown}: not domains of the checkpoint {task.domain_names}")
    generator = task.build_generator(
        models,
        Namespace(
            beam=args.beam, lenpen=args.lenpen, max_len_a=args.max_len_a, max_len_b=args.max_len_b
        ),
    )
    result = {"checkpoint": args.path, "split": args.split, "beam": args.beam, "domains": {}}
    for d in domains:
        subset = f"{args.split}.{d}"
        task.load_dataset(subset)
        refs = references(args.data, args.split, d, meta)
        found = translate(task, models, generator, subset, args.batch_size, cuda)
        if sorted(found) != list(range(len(refs))):
            raise RuntimeError(f"{subset}: {len(found)} translations for {len(refs)} references")
        hypotheses = [found[i] for i in range(len(refs))]
        if args.hypotheses_dir:
            os.makedirs(args.hypotheses_dir, exist_ok=True)
            with open(
                os.path.join(args.hypotheses_dir, f"{subset}.hyp"), "w", encoding="utf-8"
            ) as f:
                f.writelines(h + "\n" for h in hypotheses)
        bleu, chrf, bleu_sig, chrf_sig = score(hypotheses, refs)
        result["domains"][d] = {"bleu": bleu, "chrf": chrf, "sentences": len(refs)}
        result["signatures"] = {"bleu": bleu_sig, "chrf": chrf_sig}
        print(f"{d:<16} BLEU {bleu:6.2f}  chrF {chrf:6.2f}  ({len(refs)} sentences)")
    print(f"BLEU signature: {result['signatures']['bleu']}")
    print(f"chrF signature: {result['signatures']['chrf']}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
