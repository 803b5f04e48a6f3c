"""freezelab: controlled experiments on freezing, fine-tuning and re-initialising pretrained parts."""

__version__ = "0.1.0"
