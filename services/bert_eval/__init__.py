"""bert-eval: durable BERT fine-tuning + evaluation experiments on Temporal."""

__version__ = "0.1.0"
