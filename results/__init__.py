"""Results of a search: leaderboards, the HTML report, model export, prediction and evaluation.

Public API (import from the submodules; nothing heavy is imported at package import):

* ``trials.load_experiment(ref, storage=None) -> Experiment`` — one record type for the
  trials of either engine (Ray Tune via ``ExperimentAnalysis``, KerasTuner folders):
  status, sampled params, resolved config, per-epoch history, checkpoints, error.
* ``leaderboard.leaderboard(ref, storage=None) -> pandas.DataFrame`` (one row per trial),
  ``leaderboard.compare(refs, storage=None) -> (merged, best)``,
  ``leaderboard.sort_leaderboard(frame, by, top, reverse)``,
  ``leaderboard.format_leaderboard(frame, "csv" | "md" | "json" | "html")``.
* ``report.build_report(ref, out, storage=None, overlay_images=4) -> Report`` — one
  self-contained HTML file (figures in ``results/plots/``, one module per figure).
* ``export.export_trial(ref, out, trial_id=None, overwrite=False, retrain=False, verify=True)``
  -> ``ExportResult``; ``export.load_model_card(dir)``, ``export.load_exported_model(dir)``.
* ``predict.Predictor.load(model_dir)``, ``predict.collect_inputs(paths)``,
  ``predict.predict_to_folder(predictor, images, out, ...)``,
  ``predict.evaluate_model_dir(model_dir, data, limit=None, ...)``.
* ``rle.rle_encode(mask)``, ``rle.rle_decode(rle, shape)``, ``rle.instance_rles(labels)``,
  ``rle.submission_rows(image_id, labels)`` — Kaggle's column-major, 1-indexed RLE.

Library code logs and never prints; ``nuclei_search.cli.results`` prints and draws
progress bars.
"""
