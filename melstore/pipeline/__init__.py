"""The workflow's work: the plan, manifest, shards, extraction, reuse, gather and job adapter."""
