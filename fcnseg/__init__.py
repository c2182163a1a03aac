"""fcnseg: Fully Convolutional Networks for semantic segmentation in PyTorch."""

__version__ = "0.1.0"
