"""`--model ilora`: HFLM plus a LoRA library composed per document.

lm-eval's face of the package: arguments (checked in `model_args`), the run context (read once),
tagging and the forward hooks; routing is the Router's, the results config `run_report`'s. A
composition reaches the forward pass through HFLM's own batching: loglikelihood contexts get one tag
token `-(id + 1)` (HFLM's one-token cache then merges only requests of one composition) that
`_model_call` strips into per-row ids; generation contexts are `TaggedContext`s (`tok_batch_encode`).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from functools import partial
from types import SimpleNamespace

from lm_eval import utils as lm_utils
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from ilora_eval import lm_eval_compat as compat
from ilora_eval import run_report
from ilora_eval.composition import inject
from ilora_eval.distributed import collectives_for
from ilora_eval.errors import IloraError, install_excepthook
from ilora_eval.model_args import check_model_args
from ilora_eval.records import check_output_path, write_log_after_save
from ilora_eval.router import Router
from ilora_eval.scoring import ScoringModel, TargetScorer
from ilora_eval.truncation import Truncation

install_excepthook()
compat.check_version()

HFLM_ARGS = set(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}


class TaggedContext(str):
    """A generation context that remembers its composition id and task."""

    def __new__(cls, text: str, cid: int, task=None):
        obj = super().__new__(cls, text)
        obj.cid, obj.task = cid, task
        return obj


@register_model("ilora")
class IloraLM(HFLM):
    _tag_slack = 0  # 1 while tagged token lists are scored: the tag is not a model position
    _detecting = False
    _run_context = None  # the run now asking (see _run)

    def __init__(self, pretrained, library: str | None = None, strategy: str = "ilora", composition: str = "param",
                 **kwargs):
        """ilora's other arguments (embedder, exclude, routing_log, include_path, check_base, progress,
        fit_cache, adapter_cache): `model_args.OWN_DEFAULTS`; the strategy's, then HFLM's, in kwargs."""
        args = check_model_args(strategy, library, composition, kwargs, HFLM_ARGS)
        check_output_path(getattr(compat.evaluation_tracker(), "output_path", None))  # before any work
        self.pretrained_name = pretrained
        super().__init__(pretrained=pretrained, **args.hflm)
        self.comm = collectives_for(self.rank, self.world_size, self.device)
        self.cuts = Truncation(self.comm)  # not `truncation`: HFLM's own flag
        if self.comm.cpu:  # HFLM saw one process
            self._rank, self._world_size = self.comm.rank, self.comm.world_size
        self.state = args.composition_state()
        self.library = args.open_library(library, pretrained)
        if self.library is not None:
            inject(self._model, self.library, self.state)
        context = {"pretrained": str(pretrained), "revision": getattr(self, "revision", None),
                   "composition": self.state.mode, "dtype": str(self._model.dtype)}
        self.router = Router(strategy=strategy, config=args.config, library=self.library, state=self.state,
                             scorer=TargetScorer(self._scoring_model(), self.state), context=context,
                             collectives=self.comm, **args.router_kwargs(library))

    def _scoring_model(self) -> ScoringModel:
        tok, size = self.tokenizer, self.batch_size_per_gpu
        return ScoringModel(model=self._model, backend=self.backend, device=self.device, max_length=HFLM.max_length.fget(self),
                            pad_id=tok.pad_token_id or 0, eos_id=tok.eos_token_id, encode_pair=self._encode_pair,
                            encode=self.tok_encode, encode_special=lambda s: tok(s, add_special_tokens=True).input_ids,
                            # the weight search batches rows like lm-eval batches requests: --batch_size,
                            # or the size `auto` detects for the longest sequences
                            rows_per_batch=int(self._detect_batch_size() if str(size).startswith("auto") else size))

    # ------------------------------------------------------------ collectives (HFLM's contract)
    def all_gather(self, tensor):
        return self.comm.all_gather_tensor(tensor) if self.comm.cpu else super().all_gather(tensor)

    def barrier(self):
        return self.comm.barrier() if self.comm.cpu else super().barrier()

    # ------------------------------------------------------------ routing
    def _run(self) -> compat.RunContext:
        """The run now asking, read from lm-eval once, at its first request (outside a run: empty,
        read again), and handed down; get_model_info, the run's end, lets it go."""
        if self._run_context is None or self._run_context.tasks is None:
            self._run_context = compat.run_context(self)
        return self._run_context

    def _composition_ids(self, requests) -> list[int]:
        self.router.prepare_run(requests, self._run())
        return self.router.route(requests)

    # ------------------------------------------------------------ lm-eval request types
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        cids = self._composition_ids(requests)
        new_reqs = []
        for req, cid in zip(requests, cids):
            context, continuation = req.args
            if context == "":  # TemplateLM.loglikelihood's encoding (tests/test_lm_face.py compares)
                cont = self.tok_encode(continuation, add_special_tokens=False)
                ctx, cont = ([self.prefix_token_id], cont) if not cont or self.prefix_token_id != cont[0] else (cont[:1], cont[1:])
            elif continuation == "":
                ctx, cont = self.tok_encode(context), []
            else:
                ctx, cont = self._encode_pair(context, continuation)
            new_reqs.append(((context, continuation), self._tag(ctx, cont, cid, req.task_name), cont))
        self.cuts.warn(self.max_length)  # before any forward pass
        # an empty continuation has probability 1; HFLM would assert on it
        scores = iter(self._tagged_loglikelihood([r for r in new_reqs if r[2]], disable_tqdm))
        return self._synced([next(scores) if r[2] else (0.0, True) for r in new_reqs])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        # HFLM's rolling windows, each tagged with its document's composition; one scoring call per
        # rank, so HFLM's padding of the window count across ranks is not needed (tests compare both)
        cids = self._composition_ids(requests)
        windows, owners = [], []
        for i, (req, cid) in enumerate(zip(requests, cids)):
            for ctx, cont in map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(req.args[0]), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, self._tag(ctx, cont, cid), cont))
                owners.append(i)
        scores = self._tagged_loglikelihood(windows, disable_tqdm)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owners, scores):
            totals[i] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return self._synced(totals)

    def generate_until(self, requests, disable_tqdm: bool = False):
        cids = self._composition_ids(requests)
        tagged = [SimpleNamespace(args=(TaggedContext(r.args[0], cid, r.task_name), *r.args[1:]))
                  for r, cid in zip(requests, cids)]
        return self._synced(super().generate_until(tagged, disable_tqdm=disable_tqdm))

    def _synced(self, results):
        """The end of a request type, on every rank: gather the records and truncation counts."""
        self.router.records.sync()
        self.cuts.sync()
        return results

    # ------------------------------------------------------------ tagging
    def _tag(self, ctx: list[int], cont: list[int], cid: int, task=None) -> list[int]:
        """Truncate as HFLM would (keeping the tag; counted under `task`), then prefix the tag."""
        ctx = self.cuts.cut(task, ctx, cont, self.max_length, causal=self.backend == "causal")
        return [-(cid + 1), *ctx]

    @contextmanager
    def _setting(self, name: str, value):
        """`name` = value for the calls inside (HFLM reads it back through the overrides below)."""
        old = getattr(self, name)
        setattr(self, name, value)
        try:
            yield
        finally:
            setattr(self, name, old)

    def _tagged_loglikelihood(self, reqs, disable_tqdm):
        with self._setting("_tag_slack", 1):
            return self._loglikelihood_tokens(reqs, disable_tqdm=disable_tqdm)

    @property
    def max_length(self) -> int:
        return HFLM.max_length.fget(self) + self._tag_slack

    def _model_call(self, inps, attn_mask=None, labels=None):
        if self._detecting:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        tags = inps[:, 0]
        if not bool((tags < 0).all()):
            raise IloraError("internal: a forward pass reached the model without composition tags")
        with self.state.rows((-tags - 1).cpu()):
            # causal logits come back one position shorter than the tagged input; HFLM reads the
            # continuation at `inplen + (len(logits) - padded len)`, which absorbs exactly that shift
            return super()._model_call(inps[:, 1:], attn_mask=None if attn_mask is None else attn_mask[:, 1:],
                                       labels=labels)

    def tok_batch_encode(self, strings, *args, left_truncate_len=None, **kwargs):
        if strings and all(isinstance(s, TaggedContext) for s in strings):
            self._gen_rows = [s.cid for s in strings]
        ids, mask = super().tok_batch_encode(list(map(str, strings)), *args, **kwargs)
        return self.cuts.cut_batch([getattr(s, "task", None) for s in strings], ids, mask, left_truncate_len)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        rows, self._gen_rows = getattr(self, "_gen_rows", None), None  # one batch's ids, used once
        if rows is None or len(rows) != context.shape[0]:
            raise IloraError("internal: generation reached the model without composition ids")
        with self.state.rows(rows):
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    def _detect_batch_size(self, requests=None, pos: int = 0):
        with self._setting("_detecting", True):
            return super()._detect_batch_size(requests, pos)

    # ------------------------------------------------------------ lm-eval's --use_cache
    def set_cache_hook(self, cache_hook) -> None:
        db = getattr(cache_hook, "dbdict", None)
        if db is not None:  # before the run's tasks load: its seed and metadata only
            run = compat.run_context(self)
            self.router.resolve_seed(run.seed)  # runs of other --seed values are other configurations
            run_report.stamp_cache(db, {"pretrained": str(self.pretrained_name), **self.router.fingerprint(),
                                        "metadata": dict(run.metadata)})
        super().set_cache_hook(cache_hook)

    # ------------------------------------------------------------ reporting
    def get_model_info(self) -> dict:
        """Merged into the results `config` (rank 0 only, after the last request: no collectives)."""
        info = super().get_model_info()
        run, self._run_context = self._run(), None  # the run ends here
        if self.world_size == 1:  # a run answered from lm-eval's cache never asked the model anything
            self.router.prepare_run((), run)
            self.router.records.use_local()
        name = compat.name_run(self.router.run_name())
        if not self.router.records.log_path:
            compat.after_results_saved(partial(write_log_after_save, self.router.records))
        info.update(self.router.info(name), ilora_truncation=self.cuts.record(HFLM.max_length.fget(self)))
        return info
