"""The throughput benchmark's workload: the lm-eval requests every arm answers, and the fit the
`ilora` strategy is given (fixed, not learned) so that its routing spreads over its compositions."""

from __future__ import annotations

import random

import numpy as np

from benchmarks.common import Corpus
from benchmarks.throughput_config import ThroughputConfig

TASK = "bench"
GEN_DOC_OFFSET = 100_000


def make_requests(cfg: ThroughputConfig, corpus: Corpus):
    from lm_eval.api.instance import Instance

    rng = random.Random(cfg.seed + 1)
    ll = []
    for d in range(cfg.docs):
        ctx = corpus.text(d, cfg.seq, rng=rng)
        firsts = set()
        for j in range(cfg.conts):
            while True:  # distinct first words: HFLM's one-token logits cache merges nothing
                cont = corpus.random_words(2 + j % 3, rng)
                if cont.split()[0] not in firsts:
                    firsts.add(cont.split()[0])
                    break
            ll.append(Instance("loglikelihood", {"text": ctx}, (ctx, " " + cont), j, (TASK, d, 1)))
    gen = []
    kwargs = {"until": [cfg.until] if cfg.until else [], "max_gen_toks": cfg.gen_tokens, "do_sample": False,
              "min_new_tokens": cfg.gen_tokens}
    for d in range(cfg.gen_docs):
        ctx = corpus.text(cfg.docs + d, cfg.gen_seq, rng=rng)
        gen.append(Instance("generate_until", {"text": ctx}, (ctx, dict(kwargs)), 0, (TASK, GEN_DOC_OFFSET + d, 1)))
    return ll, gen



def preset_ilora(lm, cfg: ThroughputConfig, corpus: Corpus) -> None:
    """What `ilora`'s fit would have learned, fixed: per adaptation example, per_row adapters with
    weights in [-1, 1]; example k's text is drawn from the topics k, k+5, ... so documents spread
    over the 5 compositions. Routing (embed docs, nearest example) is the strategy's own."""
    from ilora_eval.adaptation import TaskData
    from ilora_eval.strategies import TaskFit

    rng = np.random.default_rng(cfg.seed + 7)
    n_topics = min(cfg.library, cfg.docs + cfg.gen_docs)
    examples, texts = [], []
    for k in range(cfg.compositions):
        idx = sorted(rng.choice(cfg.library, size=min(cfg.per_row, cfg.library), replace=False).tolist())
        examples.append({"indices": idx, "weights": rng.uniform(-1.0, 1.0, size=len(idx)).tolist()})
        texts.append(" ".join(corpus.text(t, 20, purity=1.0) for t in range(k, n_topics, cfg.compositions))
                     or corpus.text(k, 20, purity=1.0))
    lm.router.tasks[TASK] = TaskData(TASK, None, [], "none")
    lm.router.strategy.state[TASK] = TaskFit.from_json({"examples": examples,
                                                        "example_embeddings": lm.router.embed(texts).tolist()})
