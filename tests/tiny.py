"""Tiny offline models, tokenizers and LoRA libraries built inside the tests: a re-export of
`ilora_eval.testing` (shared with the benchmarks and the demo), imported by the tests as `tiny`."""

from ilora_eval.testing import (TARGETS, TOPICS, WORDS, make_adapter, make_library, make_model,  # noqa: F401
                                make_tokenizer, write_task, write_texts)
