"""Dataset builders: sources, extraction, model backends, the pipeline stages and the dataset folder."""
