"""`ilora-eval library build LIB`: validate a LoRA library and write its centroid index."""

from ilora_eval.embeddings import DEFAULT_EMBEDDER


def add_parser(sub) -> None:
    p = sub.add_parser("library", help="manage a LoRA library")
    lsub = p.add_subparsers(dest="library_command", required=True)
    b = lsub.add_parser("build", help="compute each adapter's centroid and write the index next to the adapters")
    b.add_argument("library", help="folder of PEFT LoRA adapters, or a manifest (.json/.txt)")
    b.add_argument("--embedder", default=DEFAULT_EMBEDDER, help="sentence-transformers id or local path (default: %(default)s)")
    b.add_argument("--max-texts", type=int, default=200, help="texts per adapter to embed (default: %(default)s)")
    b.add_argument("--device", default="cpu")
    b.set_defaults(func=_build)


def _build(args) -> int:
    from ilora_eval.embeddings import load_embedder
    from ilora_eval.library import LoraLibrary
    from ilora_eval.library_index import build_index

    library = LoraLibrary.open(args.library)
    out = build_index(library, load_embedder(args.embedder, device=args.device), max_texts=args.max_texts)
    print(f"indexed {len(library)} adapters ({library.spec.describe()}), library hash {library.content_hash} -> {out}")
    return 0
