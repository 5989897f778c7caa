"""iLoraComp (the paper): per adaptation example, its top_k adapters and learned weights; each
test document is answered with the composition of its most similar example."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ilora_eval.composition import Composition
from ilora_eval.errors import IloraError
from ilora_eval.strategies.base import Routing, Strategy, check_top_k, top_k
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
        weights = learn_weights(jobs, self.config, self.env)
        for t in tasks:
            self.state[t.name] = {"examples": [], "example_embeddings": self.env.embed([e.text for e in t.examples]).tolist()}
        for name, job, w in zip(owners, jobs, weights):
            self.state[name]["examples"].append({"indices": job.indices, "weights": [float(x) for x in w]})

    def route(self, task, doc_texts):
        s = self.state[task.name]
        ex = np.asarray(s["example_embeddings"], dtype=np.float32)
        sims = self.env.embed(doc_texts) @ ex.T
        out = []
        for row in sims:
            k = int(top_k(row, 1, self.config.order)[0])
            comp = s["examples"][k]
            out.append(Routing(Composition.of(comp["indices"], comp["weights"]), example=k))
        return out
