"""The CI side: suites of benchmark runs, comparison with a baseline, exports."""
