"""Text classification with a pretrained encoder (``task: classify``), built on the public plugin API."""
