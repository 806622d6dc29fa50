"""Data: records, manifests, modality kinds, batches and the built-in generators."""
