"""tamperlab: make open-weight LLMs tamper-resistant, and measure honestly whether they are."""
__version__ = "0.1.0"
