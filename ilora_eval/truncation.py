"""Requests HFLM cuts to `max_length`, counted per task (issue #16.12).

HFLM keeps only the last `max_length` tokens of a loglikelihood request (context + continuation,
causal) or of its context (seq2seq), and the last `max_length - max_gen_toks` (causal) or
`max_length` (seq2seq) tokens of a generation prompt. T5 models default to 512, so long inputs
(BBH's causal_judgement) lose their beginning without a word. The model applies the same cuts
through `cut` and `cut_batch`, which count them; the counts go to the results config and one
warning per run says so.
"""

from __future__ import annotations

import sys
from collections import Counter

import torch

from ilora_eval.distributed import Collectives


class Truncation:
    def __init__(self, comm: Collectives):
        self.comm = comm
        self.requests: Counter = Counter()  # this rank's, per task
        self.truncated: Counter = Counter()
        self.gathered: tuple[Counter, Counter] | None = None  # every rank's, as of the last sync
        self.warned = False

    def cut(self, task, ctx: list[int], cont: list[int], limit: int, causal: bool) -> list[int]:
        """A loglikelihood context as HFLM would cut it (causal: at least one context token
        stays); counted under `task` unless None (rolling windows fit by construction)."""
        over = len(ctx) + len(cont) > limit + 1 if causal else len(ctx) > limit
        if over:
            ctx = ctx[-max(1, limit + 1 - len(cont)):] if causal else ctx[-limit:]
        if task is not None:
            self._count(task, over)
        return ctx

    def cut_batch(self, tasks: list, ids: torch.Tensor, mask: torch.Tensor, limit: int | None):
        """HFLM's left truncation of a padded generation batch, per row counted."""
        if not limit:
            return ids, mask
        lengths = mask.sum(dim=1).tolist()
        for task, n in zip(tasks, lengths):
            if task is not None:
                self._count(task, n > limit)
        self.warn(limit)
        return ids[:, -limit:], mask[:, -limit:]

    def _count(self, task, over: bool) -> None:
        self.requests[task] += 1
        self.truncated[task] += int(over)

    def warn(self, limit: int) -> None:
        """Once per process, as soon as this rank has cut a request."""
        cut = {t: n for t, n in self.truncated.items() if n}
        if cut and not self.warned:
            self.warned = True
            worst = max(cut, key=cut.get)
            print(f"ilora-eval: warning: {sum(cut.values())} request(s) so far are longer than the model's "
                  f"max_length allows ({limit} input tokens) and lose their beginning, as under --model hf "
                  f"({cut[worst]} of {self.requests[worst]} in {worst}); pass --model_args max_length=N (the "
                  "paper recipe uses 2048 for flan-t5) to keep them whole. The counts per task go to the "
                  "results config (ilora_truncation).", file=sys.stderr)

    def sync(self) -> None:
        """A collective (every rank calls it at the same points): rank 0 gets every rank's counts."""
        parts = self.comm.gather_objects((dict(self.requests), dict(self.truncated)))
        self.gathered = (sum((Counter(p[0]) for p in parts), Counter()), sum((Counter(p[1]) for p in parts), Counter()))

    def record(self, max_length: int) -> dict:
        """The results config entry: {max_length, tasks: {task: {requests, truncated}}}."""
        requests, truncated = self.gathered if self.comm.world_size > 1 and self.gathered else (self.requests, self.truncated)
        return {"max_length": max_length,
                "tasks": {t: {"requests": requests[t], "truncated": truncated[t]} for t in sorted(requests, key=str)}}
