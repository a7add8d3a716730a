"""The TeaCache engine: it decides, per transformer call, whether to compute the blocks or reuse their residual.

It never names a model: an extractor (teacli.extractors) supplies every model-specific piece.

- config: TeaCacheConfig (how TeaCache decides) and TeaCacheError.
- context, registry: the CacheContext an extractor returns, and the registry of extractors by class name.
- decision: the pure rule (rel_l1, rescale, decide -> Verdict); plan: planned schedules.
- state: what each CFG branch remembers; stats: the per-call records.
- hook: TeaCacheHook, the replaced forward; parallel: deciding together under context parallelism.
- apply: apply_teacache / remove_teacache and the handle; compile: regional torch.compile.
- devices: moving residuals and waiting for a device.
- diffusers_internals: every private diffusers attribute teacli touches, in one file.
"""
