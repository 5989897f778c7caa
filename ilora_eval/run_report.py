"""The run report: what the results `config` says about a run, its name, its fingerprint.

Read-only views of the Router (its strategy, configuration, library, fitted tasks and routing
records); no collectives here: rank 0 calls them alone, after the last request.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from ilora_eval.errors import IloraError

CACHE_STAMP = "__ilora_configuration__"  # the key of the configuration in lm-eval's --use_cache file


def library_hash(library) -> str | None:
    return library.content_hash if library is not None else None


def fingerprint(router) -> dict:
    """What distinguishes this configuration's outputs (for lm-eval's --use_cache stamp)."""
    return {"library_hash": library_hash(router.library), "strategy": router.strategy_name,
            "args": asdict(router.config), "composition": router.state.mode,
            "embedder": router.embedder_name or "default"}


def stamp_cache(db, configuration: dict) -> None:
    """lm-eval's request cache (`db`, its sqlite dict) keys only on request text: one cache file
    must serve one configuration, or results of different strategies would be mixed. Stamps an
    empty file with `configuration`; refuses a file of another model or configuration."""
    fingerprint = json.dumps(configuration, sort_keys=True, default=str)
    stamp = db.get(CACHE_STAMP)
    if stamp is None and len(db) > 0:
        raise IloraError(f"--use_cache file {getattr(db, 'filename', '')} already holds results of another model; "
                         "give each ilora configuration its own --use_cache path")
    if stamp is not None and stamp != fingerprint:
        raise IloraError(f"--use_cache file {getattr(db, 'filename', '')} holds results of another ilora configuration "
                         f"({stamp}); give each strategy/configuration its own --use_cache path")
    db[CACHE_STAMP] = fingerprint


def run_name(router) -> str:
    """`ilora-<strategy>[-<arg><value>...]-seed<s>-lib<hash>`: the arguments that differ from the
    strategy's defaults, so each configuration gets its own lm-eval output folder. The seed is
    always named: under the per-seed protocol it also selects the scored documents."""
    config, library = router.config, router.library
    defaults = asdict(type(config)())
    args = asdict(config)
    parts = [f"ilora-{router.strategy_name}"]
    parts += [f"{k}{v}" for k, v in sorted(args.items()) if k != "seed" and v != defaults.get(k)]
    parts.append(f"seed{config.seed}")
    if router.state.mode != "param" and router.strategy_name != "arrow":
        parts.append(router.state.mode)
    if library is not None:
        parts.append(f"lib{library.content_hash[:8]}")
    return "-".join(parts)


def results_config(router, name: str | None) -> dict:
    """The results `config` keys of this run. Routing counts are over the records as last gathered."""
    library = router.library
    per_example = router.records.docs_per_example()
    fits = router.strategy.state
    cache = router.strategy.env.cache
    loaded = router.embeddings.loaded
    return {
        "ilora_strategy": router.strategy_name,
        "ilora_args": asdict(router.config),
        "ilora_seed": {"value": router.config.seed, "source": router.seed_source},
        "ilora_library_hash": library_hash(library),
        "ilora_library_size": len(library) if library is not None else 0,
        "ilora_embedder": loaded.name if loaded is not None else router.embedder_name,
        "ilora_composition": router.state.mode,
        "ilora_fit_cache": None if cache is None else {"dir": str(cache.dir), "hits": cache.hits,
                                                       "misses": cache.misses},
        "ilora_tasks": {
            # a strategy that learns nothing reports {}
            task: {**t.record(), "learned": fits[task].named(library.ids) if task in fits else {},
                   "docs_per_example": per_example.get(task, {})}
            for task, t in router.tasks.items()
        },
        "ilora_library": router.library_spec,
        "ilora_exclude": router.exclude,
        "ilora_excluded": list(library.excluded) if library is not None else [],
        "ilora_run_name": name,
        "ilora_routing_log": router.records.log_path,
    }
