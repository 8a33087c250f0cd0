"""Dataset and model cards on `huggingface_hub.DatasetCard` / `ModelCard`, rendered from Jinja templates."""
