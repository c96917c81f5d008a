"""Benchmarks: one script per measured claim (figures in RESULTS.md); ``benchmarks.gpu`` is the GPU suite."""
