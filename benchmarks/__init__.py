"""On-demand benchmarks (not run in CI): `python -m benchmarks [NAME ...]`.

Each benchmark is a module of this package with ``NAME``, ``MEASURE``, ``TARGET`` and
``run(quick: bool) -> dict``; the runner writes what it returns to
``benchmarks/results/<NAME>.json`` and the summary table ``benchmarks/results/summary.md``.
Figures are ratios of two things measured side by side in one run.
"""

#: benchmark name -> module (imported only when that benchmark runs)
BENCHMARKS = {
    "data_cache": "benchmarks.data_cache",
    "input_pipeline": "benchmarks.input_pipeline",
    "tiled_predict": "benchmarks.tiled_predict",
    "predict_memory": "benchmarks.predict_memory",
    "worker_memory": "benchmarks.worker_memory",
    "orchestration": "benchmarks.orchestration",
    "search_layer": "benchmarks.search_layer",
    "sample_efficiency": "benchmarks.sample_efficiency",
    "seed_notebook": "benchmarks.seed_notebook",
    "train_step": "benchmarks.train_step",
    "trial_speed": "benchmarks.trial_speed",
}
