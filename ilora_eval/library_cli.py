"""`ilora-eval library build LIB`: validate a LoRA library and write its centroid index; with
`--texts-from DATA`, first sample the texts of adapters that ship none from a local dataset."""

from ilora_eval.embeddings import DEFAULT_EMBEDDER


def add_parser(sub) -> None:
    p = sub.add_parser("library", help="manage a LoRA library")
    lsub = p.add_subparsers(dest="library_command", required=True)
    b = lsub.add_parser("build", help="compute each adapter's centroid and write the index next to the adapters")
    b.add_argument("library", help="folder of PEFT LoRA adapters, or a manifest (.json/.txt)")
    b.add_argument("--embedder", default=DEFAULT_EMBEDDER, help="sentence-transformers id or local path (default: %(default)s)")
    b.add_argument("--max-texts", type=int, default=200, help="texts per adapter to embed (default: %(default)s)")
    b.add_argument("--device", default="cpu")
    t = b.add_argument_group("texts for adapters without texts.jsonl (written to the index folder's texts/)")
    t.add_argument("--texts-from", metavar="DATA",
                   help="a local dataset (.jsonl/.json/.csv or a save_to_disk folder) with --task-column naming each "
                        "row's adapter, or a per-adapter spec .json {\"adapters\": {id: {\"path\", \"split\", \"column\", "
                        "\"count\", \"task_column\", \"task\"}}}")
    t.add_argument("--task-column", help="the dataset column holding the adapter id of each row")
    t.add_argument("--text-column", default="text", help="column(s) making a row's text, comma-separated (default: %(default)s)")
    t.add_argument("--split", help="split of a save_to_disk DatasetDict (default: train)")
    t.add_argument("--count", type=int, default=200, help="texts sampled per adapter (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    b.set_defaults(func=_build)


def _build(args) -> int:
    from ilora_eval.embeddings import load_embedder
    from ilora_eval.errors import IloraError
    from ilora_eval.library import LoraLibrary
    from ilora_eval.library_index import build_index, missing_texts_message

    library = LoraLibrary.open(args.library)
    if args.texts_from:
        from ilora_eval.library_texts import sample_texts

        written = sample_texts(library, args.texts_from, task_column=args.task_column, columns=args.text_column,
                               split=args.split, count=args.count, seed=args.seed)
        print(f"sampled texts for {sum(1 for n in written.values() if n)} adapters from {args.texts_from}")
        library = LoraLibrary.open(args.library)  # the sampled texts are part of the adapters' digests
    missing = [e.name for e in library.entries if not library.texts.get(e.name)]
    if missing:
        raise IloraError(missing_texts_message(missing, args.library))
    out = build_index(library, load_embedder(args.embedder, device=args.device), max_texts=args.max_texts)
    print(f"indexed {len(library)} adapters ({library.spec.describe()}), library hash {library.content_hash} -> {out}")
    return 0
