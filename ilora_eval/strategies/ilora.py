"""iLoraComp (the paper): per adaptation example, its top_k adapters and learned weights; each
test document is answered with the composition of its most similar example."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ilora_eval.errors import IloraError
from ilora_eval.strategies.base import Routing, Strategy, at_least, check_top_k, top_k
from ilora_eval.strategies.fit import TaskFit
from ilora_eval.strategies.learned import SearchArgs, SearchJob, learn_weights

ORDERS = ("desc", "asc")


@dataclass
class IloraConfig(SearchArgs):
    top_k: int = 20
    # "desc": most similar adapters and example (the paper's text); "asc": least similar (the
    # reference code's argsort), so both can be run
    order: str = "desc"
    # "all": each example's search is scored on all the task's examples (the paper's code);
    # "own": on that example alone (a per-instance reading of the paper's text)
    search_on: str = "all"

    def validate(self) -> None:
        super().validate()
        at_least(self, "top_k", 1, why=" (adapters per adaptation example)")
        if self.order not in ORDERS:
            raise IloraError(f"order={self.order!r} is unknown; choose desc (the paper) or asc (the reference code)")
        if self.search_on not in ("all", "own"):
            raise IloraError(f"search_on={self.search_on!r} is unknown; choose all (the paper's code) or own")


class IloraStrategy(Strategy, name="ilora"):
    Config = IloraConfig
    needs_examples = True
    learned = True

    def _fit(self, tasks):
        check_top_k(self.config.top_k, len(self.env.ids))
        cents = self.env.library_centroids()
        jobs, owners = [], []
        for t in tasks:
            full = self.env.embed([e.text + e.target for e in t.examples])
            for k, sims in enumerate(full @ cents.T):
                picked = [int(i) for i in top_k(sims, self.config.top_k, self.config.order)]
                scored = t.examples if self.config.search_on == "all" else [t.examples[k]]
                jobs.append(SearchJob(f"task {t.name} example {k}", picked, scored, self.config.seed))
                owners.append(t.name)
        learned: dict[str, list] = {t.name: [] for t in tasks}
        for name, job, w in zip(owners, jobs, learn_weights(jobs, self.config, self.env)):
            learned[name].append((job.indices, w))
        for t in tasks:
            self.state[t.name] = TaskFit.examples(learned[t.name], self.env.embed([e.text for e in t.examples]))

    def route(self, task, doc_texts):
        fit = self.state[task.name]
        sims = self.env.embed(doc_texts) @ np.asarray(fit.example_embeddings, dtype=np.float32).T
        out = []
        for row in sims:
            k = int(top_k(row, 1, self.config.order)[0])
            out.append(Routing(fit.composition(k), example=k))
        return out
