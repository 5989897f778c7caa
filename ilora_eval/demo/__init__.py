"""Offline demo assets: a tiny base model, a LoRA skill library and unseen demo tasks.

Entry point: ``ilora_eval.demo.build.build_assets(root, quick=False, seed=0) -> DemoAssets``
(cached under ``default_root()``). Kept import-free so that CLI start-up stays fast.
"""
