"""Reports: Markdown tables, charts and the paper's reference tables, written once and used by every report.

- :mod:`.markdown`: the one Markdown-table helper (cells formatted one way everywhere);
- :mod:`.charts`: the one matplotlib set-up (files only, no display) and the bar chart the reports share;
- :mod:`.paper`: the paper's published tables (``paper_reference.json``), the one helper that lays them out with
  this run's rows, and the rules for when a figure may sit in a paper column;
- :mod:`.evaluation`, :mod:`.pipeline`, :mod:`.ablation`: the evaluation, pipeline and ablation reports.

Every report reads the files the stages wrote (``metrics.json``, ``report.json``, ``stats.json``) by their keys.
"""
