"""Command-line tool for ML engineers: train demo models, publish, list and activate."""
