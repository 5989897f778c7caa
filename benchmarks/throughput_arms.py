"""The arms the throughput benchmark times: lm-eval's `loglikelihood` / `generate_until` of each
model, and the raw rows (HFLM's batches fed to the model directly: base, per-row layer, PEFT
`adapter_names`, one row at a time). `jobs(bench)`: method -> {"ll": fn(warm), "gen": fn(warm)}."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.throughput_bench import Bench


@torch.no_grad()
def raw_loglikelihood(bench: Bench, model, batches, before=None, kwargs=None) -> list[float]:
    out = [0.0] * len(bench.ll_enc)
    max_len = bench.hf.max_length
    for b in batches:
        seqs = [(bench.ll_enc[i][0] + bench.ll_enc[i][1])[-(max_len + 1):][:-1] for i in b]
        inp = torch.zeros(len(b), max(map(len, seqs)), dtype=torch.long)
        for k, s in enumerate(seqs):
            inp[k, : len(s)] = torch.tensor(s)
        if before is not None:
            before(b)
        lp = F.log_softmax(model(input_ids=inp.to(bench.device), **(kwargs(b) if kwargs else {})).logits, dim=-1)
        for k, i in enumerate(b):
            cont = bench.ll_enc[i][1]
            n = len(seqs[k])
            out[i] = float(lp[k, n - len(cont) : n].gather(1, torch.tensor(cont, device=bench.device)[:, None]).sum())
    return out

@torch.no_grad()
def raw_generate(bench: Bench, model, batches, before=None, kwargs=None) -> list[str]:
    tok = bench.hf.tokenizer
    pad = tok.pad_token_id
    out = [""] * len(bench.gen_enc)
    for b in batches:
        seqs = [bench.gen_enc[i] for i in b]
        width = max(map(len, seqs))
        inp = torch.full((len(b), width), pad, dtype=torch.long)
        mask = torch.zeros_like(inp)
        for k, s in enumerate(seqs):
            inp[k, width - len(s):] = torch.tensor(s)
            mask[k, width - len(s):] = 1
        if before is not None:
            before(b)
        gen = model.generate(input_ids=inp.to(bench.device), attention_mask=mask.to(bench.device),
                             max_new_tokens=bench.cfg.gen_tokens, min_new_tokens=bench.cfg.gen_tokens,
                             do_sample=False, pad_token_id=pad, **(kwargs(b) if kwargs else {}))
        for k, i in enumerate(b):
            out[i] = tok.decode(gen[k, width:].tolist(), skip_special_tokens=True)
    return out


def jobs(bench: Bench) -> dict[str, dict]:
    """method -> {"ll": fn(warmup: bool), "gen": fn(warmup: bool)}"""
    J = {}
    ll, gen = bench.ll_reqs, bench.gen_reqs

    def lm_eval(lm):
        return {"ll": lambda warm: [x[0] for x in lm.loglikelihood(ll[:4] if warm else ll, disable_tqdm=True)],
                "gen": lambda warm: lm.generate_until(gen[:2] if warm else gen, disable_tqdm=True)}

    want = bench.cfg.methods
    if "hf" in want:
        J["hf"] = lm_eval(bench.hf)
    for name in ("base", "retrieve_fuse", "ilora"):
        if f"ilora:{name}" in want:
            J[f"ilora:{name}"] = lm_eval(bench.lms[name])

    def raw(model, before_ll=None, before_gen=None, kw_ll=None, kw_gen=None, after=None):
        def runner(fn, batches, warm_rows, before, kw):
            def run(warm):
                try:
                    return fn(bench, model, [batches[0][:warm_rows]] if warm else batches, before, kw)
                finally:
                    after and after()

            return run

        return {"ll": runner(raw_loglikelihood, bench.ll_batches, 4, before_ll, kw_ll),
                "gen": runner(raw_generate, bench.gen_batches, 2, before_gen, kw_gen)}

    if "raw:base" in want:
        J["raw:base"] = raw(bench.hf.model)
    if "raw:per_row_rf" in want:
        lm = bench.lms["retrieve_fuse"]
        ll_c, gen_c = bench.cids("retrieve_fuse", ll), bench.cids("retrieve_fuse", gen)
        J["raw:per_row_rf"] = raw(lm.model, before_ll=lambda bb: lm.state.set_rows([ll_c[i] for i in bb]),
                                  before_gen=lambda bb: lm.state.set_rows([gen_c[i] for i in bb]),
                                  after=lambda: lm.state.set_rows(None))
    for method, strategy in (("raw:peft_rf", "retrieve_fuse"), ("raw:peft_ilora", "ilora")):
        if method in want:
            ll_s = [bench.slot_of.get(c, "__base__") for c in bench.compositions(strategy, ll)]
            gen_s = [bench.slot_of.get(c, "__base__") for c in bench.compositions(strategy, gen)]
            J[method] = raw(bench.peft, kw_ll=lambda bb, s=ll_s: {"adapter_names": [s[i] for i in bb]},
                            kw_gen=lambda bb, s=gen_s: {"adapter_names": [s[i] for i in bb]})
    if "raw:one_row_rf" in want:
        J["raw:one_row_rf"] = one_row_jobs(bench)
    return J

def one_row_jobs(bench: Bench):
    """Rows in document order; the slot is recomposed whenever the composition changes (once per
    document), then each row runs alone, unpadded."""
    ll_c = bench.compositions("retrieve_fuse", bench.ll_reqs)
    gen_c = bench.compositions("retrieve_fuse", bench.gen_reqs)
    ll_rows = [[i] for i in sorted(range(len(bench.ll_reqs)), key=lambda i: bench.ll_reqs[i].doc_id)]
    gen_rows = [[i] for i in range(len(bench.gen_reqs))]
    current = {"comp": None}

    def before(comps):
        def f(bb):
            c = comps[bb[0]]
            if c is not current["comp"]:
                with torch.no_grad():
                    bench.write_slot("slot", c)
                current["comp"] = c
        return f

    def reset():
        current["comp"] = None

    def run_ll(warm):
        reset()
        return raw_loglikelihood(bench, bench.peft, ll_rows[:2] if warm else ll_rows, before(ll_c))

    def run_gen(warm):
        reset()
        return raw_generate(bench, bench.peft, gen_rows[:1] if warm else gen_rows, before(gen_c))

    return {"ll": run_ll, "gen": run_gen}
