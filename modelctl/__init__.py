"""`modelctl`, the command-line tool for ML engineers: train the demo models, publish
versions (with their model cards), list, show and activate them, roll them out (aliases,
traffic splits, shadows) and write their cards."""
