"""Working with the field's tools (neuralpredictors / nnfabrik models, loaders and metrics)."""
