"""The shipped configs, read as package data: profiles/, methods/ (YAML) and reference/ (the paper's numbers,
the shipped cell costs). A folder named by $MICS_BENCH_CONFIGS with the same layout comes first."""
