"""Answer an exported ilora run's generation documents with vLLM, each with its composition's
adapter, and count how many answers equal the run's own.

    python scripts/serve/serve_vllm.py EXPORT/routes.json [--samples FILE ...] [--model BASE]

EXPORT is the folder written by `ilora-eval export`; the samples are the run's
`samples_<task>_<date_id>.jsonl` (lm_eval --log_samples), found beside the results file that
routes.json names unless given. Only `generate_until` documents are served (vLLM generates; the
log-likelihood documents of multiple-choice tasks are skipped and counted).

vLLM is imported inside main(): building the plan needs neither vLLM nor a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

# max_lora_rank values vLLM accepts
VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class PlanItem:
    task: str
    doc_id: int | str
    prompt: str
    adapter: Path  # the composition's PEFT adapter folder
    max_tokens: int
    until: list[str]
    expected: str  # the ilora run's answer (lm-eval's `resps`, before filters)


class PlanError(Exception):
    pass


def load_routes(path: str | Path) -> tuple[dict, Path]:
    path = Path(path)
    if path.is_dir():
        path = path / "routes.json"
    try:
        routes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PlanError(f"cannot read {path} ({type(err).__name__}); pass the routes.json written by ilora-eval export") from None
    if not str(routes.get("format", "")).startswith("ilora-eval routes"):
        raise PlanError(f"{path} is not an ilora-eval routes.json; pass the one written by ilora-eval export")
    return routes, path.parent


def samples_files(routes: dict) -> dict[str, Path]:
    """task -> samples file of the run routes.json was exported from (same date id)."""
    results = Path(routes["results"])
    date_id = results.stem[len("results_"):]
    suffix = f"_{date_id}.jsonl"
    found = {}
    for f in sorted(results.parent.glob(f"samples_*{suffix}")):
        found[f.name[len("samples_"):-len(suffix)]] = f
    if not found:
        raise PlanError(f"no samples_*{suffix} beside {results}; run lm_eval with --log_samples or pass --samples")
    return found


def _task_of(path: Path, tasks: list[str]) -> str:
    """samples_<task>_<date_id>.jsonl: the longest routed task name the file name carries."""
    name = path.name[len("samples_"):] if path.name.startswith("samples_") else path.name
    hits = [t for t in tasks if name.startswith(t + "_")]
    if not hits:
        raise PlanError(f"{path.name} belongs to none of the exported tasks ({', '.join(tasks)}); pass the run's samples files")
    return max(hits, key=len)


def adapter_for(routes: dict, root: Path, task: str, doc_id) -> Path:
    entry = routes["tasks"].get(task)
    if entry is None:
        raise PlanError(f"task {task!r} is not in routes.json; export the run these samples belong to")
    if "adapter" in entry:
        return root / entry["adapter"]
    folder = entry.get("documents", {}).get(str(doc_id))
    if folder is None:
        raise PlanError(f"document {doc_id} of task {task!r} has no route in routes.json; was it routed by this run?")
    return root / folder


def build_plan(routes_path: str | Path, samples: list[str | Path] | None = None) -> tuple[list[PlanItem], int]:
    """(one item per generation document, number of non-generation documents skipped)."""
    routes, root = load_routes(routes_path)
    tasks = list(routes["tasks"])
    files = {_task_of(Path(s), tasks): Path(s) for s in samples} if samples else samples_files(routes)
    items, skipped = [], 0
    for task, path in sorted(files.items()):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                s = json.loads(line)
                args = s["arguments"]["gen_args_0"]
                gen = args.get("arg_1")
                if not isinstance(gen, dict):  # a (context, continuation) log-likelihood request
                    skipped += 1
                    continue
                until = gen.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                resp = s["resps"][0]
                items.append(PlanItem(task, s["doc_id"], args["arg_0"], adapter_for(routes, root, task, s["doc_id"]),
                                      int(gen.get("max_gen_toks", 256)), until,
                                      resp[0] if isinstance(resp, list) else resp))
    return items, skipped


def cut(text: str, until: list[str]) -> str:
    """lm-eval's post-processing: the answer ends before the first stop sequence."""
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


def max_lora_rank(adapters: list[Path]) -> int:
    r = max(json.loads((a / "adapter_config.json").read_text())["r"] for a in adapters)
    return next(v for v in VLLM_RANKS if v >= r)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("routes", help="routes.json written by ilora-eval export (or its folder)")
    p.add_argument("--samples", nargs="+", default=None, help="the run's samples_<task>_<date_id>.jsonl files")
    p.add_argument("--model", default=None, help="base model (default: routes.json's base_model)")
    p.add_argument("--max-loras", type=int, default=8, help="adapters in one batch (vLLM max_loras)")
    p.add_argument("--dtype", default="auto", help="vLLM dtype (the run's dtype gives equal answers)")
    p.add_argument("--out", default=None, help="write per-document answers as JSONL here")
    p.add_argument("--dry-run", action="store_true", help="print the plan (documents per adapter) without vLLM")
    args = p.parse_args(argv)
    try:
        items, skipped = build_plan(args.routes, args.samples)
    except PlanError as err:
        print(f"serve_vllm: error: {err}", file=sys.stderr)
        return 2
    if not items:
        print(f"serve_vllm: no generation documents to serve ({skipped} log-likelihood documents skipped)")
        return 0
    adapters = sorted({i.adapter for i in items})
    if args.dry_run:
        for a in adapters:
            print(f"{a.name}: {sum(i.adapter == a for i in items)} document(s)")
        print(f"{len(items)} generation documents on {len(adapters)} adapters, max_lora_rank={max_lora_rank(adapters)} "
              f"({skipped} log-likelihood documents skipped)")
        return 0
    routes, _ = load_routes(args.routes)
    model = args.model or routes.get("base_model")
    if not model:
        print("serve_vllm: error: routes.json names no base model; pass --model", file=sys.stderr)
        return 2
    try:
        from vllm import LLM, SamplingParams  # noqa: PLC0415 (vLLM only where it runs)
        from vllm.lora.request import LoRARequest  # noqa: PLC0415
    except ImportError:
        print("serve_vllm: error: vLLM is not installed; run this on a machine with `pip install vllm` and a GPU",
              file=sys.stderr)
        return 2

    ids = {a: k + 1 for k, a in enumerate(adapters)}  # LoRARequest ids start at 1
    llm = LLM(model=model, enable_lora=True, max_loras=min(args.max_loras, len(adapters)),
              max_lora_rank=max_lora_rank(adapters), dtype=args.dtype)
    requests = {a: LoRARequest(a.name, ids[a], str(a)) for a in adapters}
    equal = 0
    # one generate call per (max_tokens, stop) setting; documents of every adapter share it
    groups: dict[tuple, list[PlanItem]] = {}
    for item in items:
        groups.setdefault((item.max_tokens, tuple(item.until)), []).append(item)
    rows = []
    for (max_tokens, until), group in groups.items():
        params = SamplingParams(temperature=0, max_tokens=max_tokens, stop=list(until) or None)
        outputs = llm.generate([i.prompt for i in group], params, lora_request=[requests[i.adapter] for i in group])
        for item, out in zip(group, outputs):
            answer = cut(out.outputs[0].text, list(until))
            equal += answer == item.expected
            rows.append({"task": item.task, "doc_id": item.doc_id, "adapter": item.adapter.name,
                         "answer": answer, "ilora": item.expected, "equal": answer == item.expected})
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    print(f"{equal}/{len(items)} answers equal to the ilora run's ({len(adapters)} adapters; "
          f"{skipped} log-likelihood documents skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
