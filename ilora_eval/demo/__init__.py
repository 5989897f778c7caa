"""Offline demo: a tiny base model, a LoRA skill library and unseen demo tasks, SHIPPED with the
package (``assets/``, hash-checked) so every machine evaluates the same model.

Entry points: ``ilora_eval.demo.build.shipped_assets() -> DemoAssets``; ``build_assets(root)``
retrains them (``ilora-eval demo --rebuild``); ``ilora_eval.demo.run.run_demo`` evaluates.
Kept import-free so that CLI start-up stays fast.
"""
